"""Real service processes for tests and benchmarks, and waiting for them: a private Redis (throw-away,
or one a test can crash and restart on its port), a Celery worker of the portal app, a free port,
and `unavailable` for a component this machine lacks (a failure where the whole suite must run)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import pytest
import redis

from tests.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose real component is missing here; fail instead where the whole suite must
    run (scripts/test.sh sets VIRTLAB_REQUIRE_ALL=1), so CI cannot pass by skipping its VMs."""
    if os.environ.get("VIRTLAB_REQUIRE_ALL") == "1":
        pytest.fail(f"required for this run: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
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
        stop_process(proc, 10)


class RedisServer:
    """A private redis-server on a port of its own that a test can crash or restart on that port.
    `persistent` keeps its data in an append-only file across restarts, as the docker-compose
    Redis does; without it a restart loses everything (as `make run`'s Redis would)."""

    def __init__(self, workdir: Path, persistent: bool = True):
        self.workdir, self.persistent, self.port = workdir, persistent, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.workdir),
             "--appendonly", "yes" if self.persistent else "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: redis.Redis.from_url(self.url).ping(), 10, "redis")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """SIGTERM: a clean shutdown (the append-only file is flushed); SIGKILL: a crash."""
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
            self.proc = None

    def restart(self, sig: signal.Signals = signal.SIGTERM, down_s: float = 0.0) -> None:
        self.stop(sig)
        time.sleep(down_s)
        self.start()


@contextmanager
def celery_worker(env: dict[str, str], queues: str = "web", name: str = "test") -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker process for the portal app."""
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "celery"),
            "-A",
            "portal",
            "worker",
            "-n",
            f"{name}@%h",
            "-Q",
            queues,
            "-c",
            "1",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "WARNING",
        ],
        cwd=ROOT,
        env={**os.environ, **env},
    )
    try:
        yield proc
    finally:
        stop_process(proc, 15)
