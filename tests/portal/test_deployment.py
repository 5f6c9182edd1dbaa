"""Production settings pass Django's deploy checks; docker-compose.yml is valid and its healthchecks work."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lab_stack import uvicorn_argv
from tests.processes import stop_process
from tests.servers import ROOT, free_port, wait_for

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
APP_USER = "10001:10001"  # the Dockerfile's `virtlab` user
SECRETS = ("django_secret_key", "database_url", "postgres_password", "redis_url", "redis_password")


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
    # The libvirt socket is the worker's whole interface to VMs: no device, no privilege.
    assert not devices(worker)
    assert not any("kvm" in source for source, _target in mounts(worker))
    assert not worker.get("privileged")
    assert not worker.get("cap_add")
    assert worker["environment"]["LIBVIRT_URI"] == "qemu:///system"
    assert str(worker["environment"]["LABS_ALLOW_UNCONFINED"]) == "0"
    for name in APP_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        env = services[name]["environment"]
        assert env["SECRET_KEY_FILE"] == "/run/secrets/django_secret_key"
        assert env["DATABASE_URL_FILE"] == "/run/secrets/database_url"
        assert env["REDIS_URL_FILE"] == "/run/secrets/redis_url"
        assert {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"}.isdisjoint(env), "URLs with passwords come from files"
        assert {"django_secret_key", "database_url", "redis_url"} <= secret_names(services[name]), name
    migrate = services["migrate"]
    assert "manage.py migrate" in " ".join(migrate["command"])
    assert "docs build" in " ".join(migrate["command"])
    assert str(migrate["restart"]) == "no"
    assert "migrate" not in migrate["depends_on"]
    for secret in SECRETS:
        assert compose["secrets"][secret]["file"].endswith(f"var/secrets/{secret}")
    assert_non_root(services)
    assert_redis_is_guarded(services["redis"])
    postgres = services["postgres"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "POSTGRES_PASSWORD" not in postgres["environment"]
    assert secret_names(postgres) == {"postgres_password"}


def secret_names(service: dict[str, Any]) -> set[str]:
    """Secrets a service mounts, in the short form or the long form `config` prints."""
    return {s["source"] if isinstance(s, dict) else s for s in service.get("secrets", [])}


def assert_non_root(services: dict[str, Any]) -> None:
    for name, service in services.items():
        user = str(service.get("user", ""))
        assert user, f"{name} has no user: it would run as its image's default (root for ours)"
        assert user.split(":")[0] not in {"root", "0"}, f"{name} runs as {user}"
        assert not service.get("privileged"), name
    for name in APP_SERVICES:
        assert str(services[name]["user"]) == APP_USER, name


def assert_redis_is_guarded(redis: dict[str, Any]) -> None:
    command = " ".join(as_list(redis["command"]))
    assert "--requirepass" in command
    assert "/run/secrets/redis_password" in command
    assert "--maxmemory-policy noeviction" in command, "a full broker must refuse writes, not drop tasks"
    assert re.search(r"--maxmemory \S+", command)
    assert "redis_password" in secret_names(redis)
    assert "/run/secrets/redis_password" in " ".join(as_list(redis["healthcheck"]["test"]))


def test_docker_compose_file_has_the_deployment_shape() -> None:
    assert_deployment_shape(yaml.safe_load(COMPOSE_FILE.read_text()))


def test_no_password_is_written_into_the_deployment() -> None:
    text = COMPOSE_FILE.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"://[^/\s:@]*:[^/\s@$]+@", code), "a URL with a literal password"
    assert "virtlab@postgres" not in code
    for name, service in yaml.safe_load(text)["services"].items():
        for key in service.get("environment", {}):
            if "PASSWORD" in key or key.endswith(("_URL", "SECRET_KEY")):
                assert key.endswith("_FILE"), f"{name}: {key} set in the environment"


def test_the_image_runs_as_an_unprivileged_user() -> None:
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert users, "the Dockerfile never leaves root"
    assert users[-1] == APP_USER


def redis_service_command(secret: Path, port: int) -> str:
    """The compose file's Redis command, for this machine's redis-server on a free port."""
    command = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["redis"]["command"]
    assert command[:2] == ["sh", "-c"]
    script = str(command[2]).replace("$$", "$").replace("/run/secrets/redis_password", str(secret))
    return script + f" --port {port} --save '' --appendonly no --dir {secret.parent}"


def redis_healthcheck(secret: Path, port: int) -> subprocess.CompletedProcess[str]:
    test = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["redis"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    script = str(test[1]).replace("$$", "$").replace("/run/secrets/redis_password", str(secret))
    script = script.replace("redis-cli ping", f"redis-cli -p {port} ping")
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=10, check=False)


def test_redis_requires_the_password_and_never_evicts(tmp_path: Path) -> None:
    """The compose file's Redis command and healthcheck, run with this machine's redis-server."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    secret = tmp_path / "redis_password"
    secret.write_text("s3cret-for-this-test\n")
    port = free_port()
    env = {**os.environ, "REDIS_MAXMEMORY": "64mb"}
    proc = subprocess.Popen(["sh", "-c", redis_service_command(secret, port)], env=env, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: redis_healthcheck(secret, port).returncode == 0, 20, "redis healthcheck")
        cli = ["redis-cli", "-p", str(port)]
        anonymous = subprocess.run([*cli, "set", "k", "v"], capture_output=True, text=True, timeout=10)
        assert "NOAUTH" in anonymous.stdout + anonymous.stderr
        authed = [*cli, "--no-auth-warning", "-a", "s3cret-for-this-test"]
        policy = subprocess.run([*authed, "config", "get", "maxmemory-policy"], capture_output=True, text=True)
        assert policy.stdout.split() == ["maxmemory-policy", "noeviction"]
        limit = subprocess.run([*authed, "config", "get", "maxmemory"], capture_output=True, text=True)
        assert limit.stdout.split() == ["maxmemory", str(64 * 1024 * 1024)]
        secret.write_text("wrong\n")
        assert redis_healthcheck(secret, port).returncode != 0, "NOAUTH must not count as healthy"
    finally:
        stop_process(proc, 10)


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
    proc = subprocess.Popen(uvicorn_argv(env, port), cwd=ROOT, env=env)
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
