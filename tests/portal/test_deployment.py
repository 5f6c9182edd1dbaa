"""Production settings pass Django's deploy checks; docker-compose.yml is valid."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import ROOT

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
        cwd=ROOT, env={**os.environ, **PROD_ENV}, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no issues" in proc.stdout


def test_check_deploy_flags_insecure_settings() -> None:
    env = {**os.environ, **PROD_ENV, "SECURE_COOKIES": "0"}
    proc = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert "SESSION_COOKIE_SECURE" in proc.stdout + proc.stderr


def compose_command() -> list[str]:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither `docker compose` nor `docker-compose` is installed (scripts/system-packages.txt)")


def test_docker_compose_file_is_valid() -> None:
    proc = subprocess.run([*compose_command(), "config"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for service in ("web:", "worker:", "beat:", "redis:", "postgres:"):
        assert service in proc.stdout
    assert proc.stdout.count("healthcheck:") >= 4


def test_docker_compose_validation_is_real(tmp_path: Path) -> None:
    broken = (ROOT / "docker-compose.yml").read_text().replace("restart: unless-stopped", "restart: [oops]", 1)
    (tmp_path / "docker-compose.yml").write_text(broken)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    proc = subprocess.run([*compose_command(), "config"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
