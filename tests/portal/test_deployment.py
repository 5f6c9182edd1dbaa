"""Production settings pass Django's deploy checks; docker-compose.yml is valid and its healthchecks work."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab_stack import ROOT, VENV_BIN, free_port, wait_for
from tests.processes import stop_process

PROD_ENV = {
    "SECRET_KEY": "x" * 20 + "production-secret-key-with-enough-entropy-1234567890",
    "ALLOWED_HOSTS": "virtlab.example.org",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_COOKIES": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "DEBUG": "0",
}


def test_check_deploy_is_clean_with_production_settings() -> None:
    proc = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**os.environ, **PROD_ENV},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no issues" in proc.stdout


def test_check_deploy_flags_insecure_settings() -> None:
    env = {**os.environ, **PROD_ENV, "SECURE_COOKIES": "0"}
    proc = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "SESSION_COOKIE_SECURE" in proc.stdout + proc.stderr


COMPOSE_FILE = ROOT / "docker-compose.yml"
LONG_RUNNING = ("web", "worker", "beat", "redis", "postgres")
APP_SERVICES = ("web", "worker", "beat")


def compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) or `docker-compose` (v1), whichever is installed."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def mounts(service: dict[str, Any]) -> set[tuple[str, str]]:
    """(source, target) of each volume, in the short form or the long form `config` prints."""
    pairs = set()
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            pairs.add((volume["source"], volume["target"]))
        else:
            source, target = volume.split(":")[:2]
            pairs.add((source, target))
    return pairs


def devices(service: dict[str, Any]) -> set[str]:
    return {d["source"] if isinstance(d, dict) else d.split(":")[0] for d in service.get("devices", [])}


def assert_deployment_shape(compose: dict[str, Any]) -> None:
    """What the deployment must have, whether read from the file or from `compose config`."""
    services = compose["services"]
    assert set(services) >= {*LONG_RUNNING, "migrate"}
    for name in LONG_RUNNING:
        test = services[name].get("healthcheck", {}).get("test")
        assert test, f"{name} has no healthcheck"
        assert as_list(test)[0] in {"CMD", "CMD-SHELL"}, f"{name}: {test}"
    # The web probe is liveness: it must not depend on Redis or the database, nor be redirected.
    assert "/healthz/live" in " ".join(services["web"]["healthcheck"]["test"])
    worker = services["worker"]
    assert ("/var/run/libvirt", "/var/run/libvirt") in mounts(worker)
    assert "/dev/kvm" in devices(worker)
    assert worker["environment"]["LIBVIRT_URI"] == "qemu:///system"
    for name in APP_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert services[name]["environment"]["SECRET_KEY_FILE"] == "/run/secrets/django_secret_key"
        assert "django_secret_key" in str(services[name]["secrets"])
    migrate = services["migrate"]
    assert "manage.py migrate" in " ".join(migrate["command"])
    assert "docs build" in " ".join(migrate["command"])
    assert str(migrate["restart"]) == "no"
    assert "migrate" not in migrate["depends_on"]
    assert compose["secrets"]["django_secret_key"]["file"].endswith("var/django_secret_key")


def test_docker_compose_file_has_the_deployment_shape() -> None:
    assert_deployment_shape(yaml.safe_load(COMPOSE_FILE.read_text()))


def test_docker_compose_config_accepts_the_file() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed; the shape test parsed the file")
    proc = subprocess.run([*command, "config"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert_deployment_shape(yaml.safe_load(proc.stdout))


def test_docker_compose_validation_is_real(tmp_path: Path) -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    broken = COMPOSE_FILE.read_text().replace("restart: unless-stopped", "restart: [oops]", 1)
    (tmp_path / "docker-compose.yml").write_text(broken)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    proc = subprocess.run([*command, "config"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0


def healthcheck_code(service: str) -> str:
    test = yaml.safe_load(COMPOSE_FILE.read_text())["services"][service]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python3", "-c"]
    return str(test[3])


def run_healthcheck(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The image's system python3 runs it; so does this machine's.
    return subprocess.run(["python3", "-c", code], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True,
                          text=True, timeout=20)  # fmt: skip


@pytest.mark.parametrize("allowed_hosts", ["virtlab.example.org", ".example.org,localhost", "*"])
def test_web_healthcheck_passes_under_production_settings(allowed_hosts: str) -> None:
    """The compose healthcheck, run against uvicorn with the compose file's security settings."""
    port = free_port()
    env = {**os.environ, **PROD_ENV, "ALLOWED_HOSTS": allowed_hosts}
    proc = subprocess.Popen(
        [str(VENV_BIN / "uvicorn"), "portal.asgi:application", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    code = healthcheck_code("web").replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    try:
        probe_env = {"ALLOWED_HOSTS": allowed_hosts}
        wait_for(lambda: run_healthcheck(code, probe_env).returncode == 0, 30, "web healthcheck")
    finally:
        stop_process(proc, 10)


def test_beat_healthcheck_follows_the_schedule_file(tmp_path: Path) -> None:
    schedule = tmp_path / "celerybeat-schedule"
    code = healthcheck_code("beat").replace("/tmp/celerybeat-schedule", str(schedule))
    assert run_healthcheck(code, {}).returncode != 0  # beat never ran
    schedule.write_bytes(b"")
    assert run_healthcheck(code, {}).returncode == 0
    stale = time.time() - 120
    os.utime(schedule, (stale, stale))
    assert run_healthcheck(code, {}).returncode != 0
