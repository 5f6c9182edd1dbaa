"""scripts/run.sh (what `make run` runs after setup): serves the portal, prints the URL and the
admin login, and Ctrl-C stops every process it started, and only the daemons this run started."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from labs.hypervisor import Hypervisor
from tests.hypervisor.conftest import libvirt_ready
from tests.lab_stack import destroy_vms_with_prefix, lab_env, prepare
from tests.processes import descendants, kill_process_tree
from tests.servers import ROOT, free_port, private_redis, wait_for

pytestmark = pytest.mark.slow
__all__ = ["libvirt_ready"]
COMMANDS = ("bin/uvicorn portal.asgi", "celery -A portal worker", "celery -A portal beat")


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def redis_server(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )


def test_run_serves_the_portal_and_ctrl_c_stops_everything_it_started(tmp_path: Path) -> None:
    port = free_port()
    with private_redis() as redis_url:
        env = lab_env(tmp_path, redis_url, PORT=str(port), VIRTLAB_VAR_DIR=str(tmp_path / "var"),
                      WEB_WORKERS="1", WORKER_CONCURRENCY="1")  # fmt: skip
        (tmp_path / "content").mkdir()
        prepare(env)
        # Two daemons in the services record: one "started by this run" (its process group), one
        # started by another, still running command: Ctrl-C must stop the first only.
        ours, theirs = redis_server(free_port()), redis_server(free_port())
        proc = subprocess.Popen(["scripts/run.sh"], cwd=ROOT, env={**os.environ, **env}, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        (tmp_path / "var" / "services-started").write_text(
            f"redis-server {ours.pid} {proc.pid}\nredis-server {theirs.pid} {os.getpgid(0)}\n"
        )
        output: list[str] = []
        started: dict[int, str] = {}
        stdout = proc.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: output.extend(line.decode() for line in stdout), daemon=True)
        reader.start()
        try:
            base = f"http://127.0.0.1:{port}/"
            wait_for(lambda: urllib.request.urlopen(base, timeout=2).status == 200, 60, "run.sh web")
            html = urllib.request.urlopen(base, timeout=5).read().decode()
            assert "Learn virtualization on real virtual machines" in html
            wait_for(lambda: all(any(c in cmd for cmd in descendants(proc.pid).values()) for c in COMMANDS), 30,
                     "web, worker and beat")  # fmt: skip
            started.update(descendants(proc.pid))
            printed = "".join(output)
            assert f"VirtLab is starting at {base}" in printed
            credentials = (tmp_path / "var" / "admin-credentials").read_text().strip()
            assert credentials.startswith("admin / ")
            assert f"Admin login: {credentials}" in printed

            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
            proc.wait(timeout=30)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(running(pid) for pid in started):
                time.sleep(0.1)
            left = {pid: cmd for pid, cmd in started.items() if running(pid)}
            assert not left, f"still running after Ctrl-C: {left}"
            assert ours.wait(timeout=10) == 0  # stopped by services.sh stop-started
            assert theirs.poll() is None, "a daemon this run did not start was stopped"
            assert (tmp_path / "var" / "services-started").read_text().split() == [
                "redis-server",
                str(theirs.pid),
                str(os.getpgid(0)),
            ]
        finally:
            if proc.poll() is None:
                kill_process_tree(proc.pid)
            for pid in started:  # honcho's children live in their own sessions
                if running(pid):
                    os.kill(pid, signal.SIGKILL)
            for daemon in (ours, theirs):
                daemon.kill()
                daemon.wait()


def vms_with_prefix(prefix: str) -> list[str]:
    with Hypervisor.connect() as hv:
        return [d.session_id for d in hv.list_tagged() if d.active and d.session_id.startswith(prefix)]


@pytest.mark.vm
def test_ctrl_c_leaves_no_vm_running(tmp_path: Path, libvirt_ready: None) -> None:
    """The warm-pool VM that `make run` boots is destroyed when it stops, not left running."""
    with private_redis() as redis_url:
        env = lab_env(tmp_path, redis_url, PORT=str(free_port()), WEB_WORKERS="1", WORKER_CONCURRENCY="1",
                      LABS_POOL_SIZES="tiny=1")  # fmt: skip
        prefix = env["LABS_ID_PREFIX"]
        (tmp_path / "content").mkdir()
        prepare(env)
        proc = subprocess.Popen(["scripts/run.sh"], cwd=ROOT, env={**os.environ, **env}, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            wait_for(lambda: bool(vms_with_prefix(prefix)), 180, "the warm-pool VM")
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
            proc.wait(timeout=90)
            assert vms_with_prefix(prefix) == [], "a VM outlived make run"
        finally:
            if proc.poll() is None:
                kill_process_tree(proc.pid)
            destroy_vms_with_prefix(prefix)
