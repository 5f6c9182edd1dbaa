"""GET /healthz and `manage.py doctor` report each component truthfully, against real services."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from django.test import Client
from pytest_django.fixtures import Settings

from labs.host import host_agent as agent
from labs.redis_names import ADVERT_PREFIX
from tests.lab_stack import (
    ROOT,
    celery_worker,
    free_port,
    host_agent,
    lab_env,
    private_redis,
    wait_for,
    wait_for_advert,
)

pytestmark = pytest.mark.django_db


def checks_by_name(client: Client) -> tuple[int, dict[str, dict[str, Any]]]:
    resp = client.get("/healthz")
    return resp.status_code, {c["name"]: c for c in resp.json()["checks"]}


def use_redis(settings: Settings, url: str) -> None:
    settings.REDIS_URL = url
    settings.CELERY_BROKER_URL = url


def test_healthz_reports_redis_up_then_down(client: Client, settings: Settings) -> None:
    with private_redis() as url:
        use_redis(settings, url)
        _, checks = checks_by_name(client)
        assert checks["redis"]["ok"] is True
        assert checks["database"]["ok"] is True
    # The private Redis is stopped now: the same endpoint must say so, with a hint.
    status, checks = checks_by_name(client)
    assert status == 503
    assert checks["redis"]["ok"] is False
    assert "Redis" in checks["redis"]["hint"]
    assert checks["celery"]["ok"] is False


def test_healthz_sees_a_real_celery_worker(client: Client, settings: Settings) -> None:
    with private_redis() as url:
        use_redis(settings, url)
        _, checks = checks_by_name(client)
        assert checks["celery"]["ok"] is False
        assert "no worker" in checks["celery"]["detail"]
        with celery_worker({"REDIS_URL": url}):
            wait_for(lambda: checks_by_name(client)[1]["celery"]["ok"], 30, "celery worker")
            assert "test@" in checks_by_name(client)[1]["celery"]["detail"]


def test_healthz_says_when_no_hypervisor_host_advertises(client: Client, settings: Settings) -> None:
    with private_redis() as url:
        use_redis(settings, url)
        status, checks = checks_by_name(client)
        assert status == 503
        assert checks["libvirt"]["ok"] is False
        assert "host agent" in checks["libvirt"]["hint"]


def test_doctor_fails_with_fix_hints_when_redis_is_down() -> None:
    with private_redis() as url:
        pass  # started and stopped: the port is now closed
    proc = subprocess.run(
        [sys.executable, "manage.py", "doctor"],
        cwd=ROOT,
        env={"REDIS_URL": url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "FAIL redis" in proc.stdout
    assert "fix: start Redis" in proc.stdout


UNREACHABLE_LIBVIRT = "qemu+unix:///system?socket=/nonexistent"


def image_is_present(settings: Settings) -> bool:
    """The truth the guest-image check must report, found without the code under test."""
    return (Path(settings.GUEST_IMAGE_DIR) / "manifest.json").is_file()


@pytest.mark.parametrize("image", ["built", "missing"])
def test_advert_says_libvirt_is_down_and_keeps_the_image_truthful(
    client: Client, settings: Settings, tmp_path: Path, image: str
) -> None:
    settings.LIBVIRT_URI = UNREACHABLE_LIBVIRT
    settings.VIRTLAB_HOST_NAME = "down-host"
    if image == "missing":
        settings.GUEST_IMAGE_DIR = tmp_path / "no-image"
    with private_redis() as url:
        use_redis(settings, url)
        agent._advertise_on_one_connection()  # one tick of the agent's advert loop
        status, checks = checks_by_name(client)
    assert status == 503
    libvirt = checks["libvirt:down-host"]
    assert libvirt["ok"] is False
    assert "/nonexistent" in libvirt["detail"]
    assert "setup-libvirt.sh" in libvirt["hint"]
    assert "fix libvirt" in checks["accelerator:down-host"]["hint"]
    assert checks["guest_image:down-host"]["ok"] is image_is_present(settings)


def test_host_agent_keeps_advertising_while_libvirt_is_unreachable(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    with private_redis() as url:
        use_redis(settings, url)
        env = lab_env(tmp_path, url, LIBVIRT_URI=UNREACHABLE_LIBVIRT)
        host = env["VIRTLAB_HOST_NAME"]
        with host_agent(env):
            wait_for_advert(url, host)
            # The first advert comes from the agent's start; the loop must publish the next ones.
            redis.Redis.from_url(url).delete(ADVERT_PREFIX + host)
            wait_for_advert(url, host, timeout=3 * agent.ADVERT_EVERY_S)
            status, checks = checks_by_name(client)
    assert status == 503
    assert "no hypervisor host" not in json.dumps(checks)
    assert checks[f"libvirt:{host}"]["ok"] is False
    assert "setup-libvirt.sh" in checks[f"libvirt:{host}"]["hint"]
    assert checks[f"guest_image:{host}"]["ok"] is image_is_present(settings)


def test_healthz_never_shows_url_credentials(client: Client, settings: Settings) -> None:
    with private_redis() as url:
        # Redis 7 accepts any password for its passwordless default user: the check passes.
        use_redis(settings, url.replace("redis://", "redis://default:hunter2-secret@"))
        resp = client.get("/healthz")
        checks = {c["name"]: c for c in resp.json()["checks"]}
        assert checks["redis"]["ok"] is True
        assert "redis://***@127.0.0.1" in checks["redis"]["detail"]
        assert "hunter2" not in resp.content.decode()
    # Down, the errors quote the broker too: still no password.
    resp = client.get("/healthz")
    assert resp.json()["status"] == "degraded"
    assert "hunter2" not in resp.content.decode()


def test_doctor_never_shows_url_credentials() -> None:
    # Nothing listens on a fresh free port: every Redis-facing check fails and quotes what it tried.
    secret_url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    proc = subprocess.run(
        [sys.executable, "manage.py", "doctor"],
        cwd=ROOT,
        env={"REDIS_URL": secret_url, "DATABASE_URL": "postgres://virtlab:hunter2-db@127.0.0.1:1/virtlab",
             "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "FAIL database" in proc.stdout
    assert "hunter2" not in proc.stdout + proc.stderr


def test_liveness_answers_without_redis(client: Client, settings: Settings) -> None:
    with private_redis() as url:
        pass
    use_redis(settings, url)  # Redis is down; liveness does not care
    resp = client.get("/healthz/live")
    assert resp.status_code == 200
    assert resp.content == b"ok\n"
