"""GET /healthz and `manage.py doctor` report each component truthfully, against real services;
/healthz tells anyone only ok/degraded, answers under a flood, and probes at most once per period."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client
from pytest_django.fixtures import Settings

from labs import host_registry
from labs.host import host_agent as agent
from labs.redis_names import ADVERT_PREFIX
from portal import health
from tests.lab_stack import (
    asgi_server,
    host_agent,
    lab_env,
    prepare,
    wait_for_advert,
)
from tests.servers import (
    ROOT,
    celery_worker,
    free_port,
    private_redis,
    wait_for,
)

pytestmark = pytest.mark.django_db
TOKEN = "monitor-token-5f0c2a"
MONITOR = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def fresh_reports(settings: Settings) -> Iterator[None]:
    """Every call probes afresh (tests change the services between calls); a monitor token is set."""
    settings.HEALTHZ_CACHE_S = 0
    settings.HEALTHZ_TOKEN = TOKEN
    health.forget()
    yield
    health.forget()


def checks_by_name(client: Client) -> tuple[int, dict[str, dict[str, Any]]]:
    resp = client.get("/healthz", headers=MONITOR)
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
        agent._advertise_on_one_connection(recheck=False)  # one tick of the agent's advert loop
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
        resp = client.get("/healthz", headers=MONITOR)
        checks = {c["name"]: c for c in resp.json()["checks"]}
        assert checks["redis"]["ok"] is True
        assert "redis://***@127.0.0.1" in checks["redis"]["detail"]
        assert "hunter2" not in resp.content.decode()
    # Down, the errors quote the broker too: still no password.
    resp = client.get("/healthz", headers=MONITOR)
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


# --- Who sees what: the public gets ok/degraded only; staff and the monitor token get the checks.

SECRET_HOST = "hv-rack7-internal"
IMAGE_DIR = "/srv/virtlab/images/current"


@pytest.fixture
def staffer(db: None) -> User:
    return User.objects.create_user("staffer", "staffer@example.com", "x", is_staff=True)


@pytest.mark.parametrize(
    ("who", "sees_checks"),
    [
        ("anonymous", False),
        ("learner", False),
        ("staff", True),
        ("monitor token", True),
        ("wrong token", False),
        ("token in another scheme", False),
        ("empty bearer while no token is set", False),
    ],
)
def test_only_staff_and_the_token_see_hosts_urls_and_paths(
    client: Client, settings: Settings, alice: User, staffer: User, who: str, sees_checks: bool
) -> None:
    headers = {
        "monitor token": MONITOR,
        "wrong token": {"Authorization": "Bearer not-the-token"},
        "token in another scheme": {"Authorization": f"Basic {TOKEN}"},
        "empty bearer while no token is set": {"Authorization": "Bearer "},
    }.get(who, {})
    if who == "empty bearer while no token is set":
        settings.HEALTHZ_TOKEN = ""
    if who in ("learner", "staff"):
        client.force_login(staffer if who == "staff" else alice)
    with private_redis() as url:
        use_redis(settings, url.replace("redis://", "redis://default:hunter2@"))
        host_registry.publish(host_registry.HostAdvert(name=SECRET_HOST, libvirt_ok=True, accelerator="tcg",
                                                       image_present=True, image_dir=IMAGE_DIR))  # fmt: skip
        resp = client.get("/healthz", headers=headers)
    body, text = resp.json(), resp.content.decode()
    assert resp.status_code == 503  # no Celery worker: degraded, whoever asks
    assert body["status"] == "degraded"
    if sees_checks:
        checks = {c["name"]: c for c in body["checks"]}
        assert checks[f"guest_image:{SECRET_HOST}"]["detail"] == IMAGE_DIR
        assert "redis://***@127.0.0.1" in checks["redis"]["detail"]
    else:
        assert body == {"status": "degraded"}
        for secret in ("redis://", "127.0.0.1", SECRET_HOST, IMAGE_DIR, "sqlite", "worker"):
            assert secret not in text
    assert "hunter2" not in text


def healthy_advert(name: str) -> host_registry.HostAdvert:
    """An advert with every host check passing, as its agent would send it."""
    fields = {"name": name, "libvirt_ok": True, "accelerator": "kvm", "image_present": True, "image_dir": "/x",
              "confined": True, "confinement": "per-VM uid, seccomp"}  # fmt: skip
    return host_registry.HostAdvert.from_json(json.dumps(fields))


def test_public_status_says_ok_when_every_check_passes(client: Client, settings: Settings) -> None:
    # The public answer is the same verdict as the details: 200 and "ok" exactly when all pass.
    with private_redis() as url:
        use_redis(settings, url)
        with celery_worker({"REDIS_URL": url}):
            host_registry.publish(healthy_advert("hv1"))
            wait_for(lambda: checks_by_name(client)[0] == 200, 30, "all checks passing")
            resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


# --- Bounded: a flood of calls costs one probe run per period, and never exhausts a pool.


def command_calls(client: redis.Redis, command: str) -> int:
    """How many times Redis ran `command` since the last CONFIG RESETSTAT."""
    stats: dict[str, dict[str, int]] = client.info("commandstats")
    return stats.get(f"cmdstat_{command}", {}).get("calls", 0)


def test_reports_are_reused_so_calls_cannot_flood_redis_or_celery(client: Client, settings: Settings) -> None:
    settings.HEALTHZ_CACHE_S = 2
    with private_redis() as url:
        use_redis(settings, url)
        broker = redis.Redis.from_url(url)
        broker.config_resetstat()
        # A Celery ping is one PUBLISH on the pidbox; reading the host adverts is one SCAN.
        for _ in range(30):
            assert client.get("/healthz").json() == {"status": "degraded"}
        in_one_period = command_calls(broker, "publish"), command_calls(broker, "scan")
        time.sleep(settings.HEALTHZ_CACHE_S + 0.2)
        client.get("/healthz")  # the period is over: this one probes again
        after_it = command_calls(broker, "publish"), command_calls(broker, "scan")
    assert in_one_period == (1, 1)
    assert after_it == (2, 2)


def test_a_redis_that_never_answers_is_reported_within_the_deadline(client: Client, settings: Settings) -> None:
    with socket.create_server(("127.0.0.1", 0)) as blackhole:  # accepts connections, never replies
        use_redis(settings, f"redis://127.0.0.1:{blackhole.getsockname()[1]}/0")
        started = time.monotonic()
        status, checks = checks_by_name(client)
        elapsed = time.monotonic() - started
    assert status == 503
    assert elapsed < health.PROBE_DEADLINE_S + 1
    assert checks["redis"]["ok"] is False
    assert checks["celery"]["ok"] is False
    assert checks["database"]["ok"] is True


def test_a_hung_probe_is_reported_as_timed_out_and_never_doubled(monkeypatch: pytest.MonkeyPatch) -> None:
    # A probe stuck in a driver call (no socket timeout can reach it) holds one thread, not one per run.
    release = threading.Event()
    entered: list[int] = []

    def hangs() -> list[health.Check]:
        entered.append(1)
        release.wait(30)
        return [health.Check("stuck", True, "finally")]

    monkeypatch.setattr(health, "PROBES", (health.Probe("stuck", hangs, "unstick it"),))
    try:
        started = time.monotonic()
        first = health.run_all(deadline=0.5)
        second = health.run_all(deadline=0.5)
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert [(c.name, c.ok) for c in first + second] == [("stuck", False), ("stuck", False)]
    assert "no answer within 0.5 s" in second[0].detail
    assert elapsed < 1.5
    assert entered == [1]
    wait_for(lambda: health.run_all(deadline=2)[0].ok, 5, "the probe, once unstuck")


def timed_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310  (http on loopback)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    return status, json.loads(raw), time.monotonic() - started


@pytest.mark.slow
def test_fifty_parallel_calls_then_one_more_all_answer_promptly(tmp_path: Path) -> None:
    # No caching at all (HEALTHZ_CACHE_S=0): every caller that finds no run in flight starts one, so
    # this measures the probes themselves: bounded, one run at a time, no pool left exhausted.
    with private_redis() as url:
        # 50 monitors at once, as from 50 addresses: one client's share (portal/client_share.py)
        # would queue all but 4 before they reached the probes this test is about.
        env = lab_env(tmp_path, url, HEALTHZ_CACHE_S="0", HEALTHZ_TOKEN=TOKEN, WEB_CLIENT_CONCURRENCY="50")
        prepare(env)
        broker = redis.Redis.from_url(url)
        with celery_worker(env), asgi_server(env) as base:
            wait_for(lambda: "1 worker" in json.dumps(timed_get(base + "/healthz", MONITOR)[1]), 30, "worker")
            broker.config_resetstat()
            started = time.monotonic()
            with ThreadPoolExecutor(50) as pool:
                flood = list(pool.map(lambda _: timed_get(base + "/healthz"), range(50)))
            flood_s = time.monotonic() - started
            pings = command_calls(broker, "publish")
            status, body, last_s = timed_get(base + "/healthz", MONITOR)
    assert {(s, json.dumps(b)) for s, b, _ in flood} == {(503, '{"status": "degraded"}')}  # no host agent
    slowest = max(seconds for _, _, seconds in flood)
    assert slowest < health.PROBE_DEADLINE_S + 2
    # One run in flight per process, each waiting PROBE_TIMEOUT_S for Celery replies: not 50 pings.
    assert pings <= flood_s / health.PROBE_TIMEOUT_S + 1
    assert last_s < 2
    checks = {c["name"]: c for c in body["checks"]}
    assert status == 503
    assert checks["celery"]["ok"] is True  # probed afresh after the flood, and the broker still answers
    assert checks["redis"]["ok"] is True
    print(f"50 parallel: {flood_s:.2f} s, slowest {slowest:.2f} s, {pings} ping(s); 51st: {last_s:.2f} s")
