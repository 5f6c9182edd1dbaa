"""GET /healthz and `manage.py doctor` report each component truthfully, against real services."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from django.test import Client
from pytest_django.fixtures import Settings

from tests.services import ROOT, celery_worker, private_redis, wait_for

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
