"""Real service processes started by tests (a private Redis, a Celery worker, the ASGI server)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: S110  (not up yet)
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout}s")


@contextmanager
def private_redis() -> Iterator[str]:
    """A throw-away redis-server on a free port; yields its URL."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: redis.Redis.from_url(url).ping(), 10, "redis")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def celery_worker(env: dict[str, str], queues: str = "web", name: str = "test") -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker process for the portal app."""
    proc = subprocess.Popen(
        [str(VENV_BIN / "celery"), "-A", "portal", "worker", "-n", f"{name}@%h", "-Q", queues, "-c", "1",
         "--without-heartbeat", "--without-mingle", "--without-gossip", "-l", "WARNING"],
        cwd=ROOT,
        env={**os.environ, **env},
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
