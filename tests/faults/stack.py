"""The stack the fault suite breaks: a restartable Redis, uvicorn with two workers, a SQLite file,
and hypervisor hosts in boxes of their own (tests/faults/hosts.py), each with its two workers.

Also what is checked after every fault (`audit`): no orphaned domain or disk on any reachable host,
no session stuck in a transient state, and no ready session whose VM is gone or whose terminal
input is still held back.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
import yaml

from labs.redis_names import hold_key
from labs.states import ENDED, VM_LIVE, SessionState
from tests import lab_stack, servers
from tests.faults.hosts import HostBox, host_box
from tests.processes import descendants, stop_process

S = SessionState
FAULT_LAB = "fault-drill"
# A step's check that takes a while, so a worker can be killed while it runs.
CHECK_SECONDS = 2
TRANSIENT = frozenset({S.REQUESTED, S.PROVISIONING, S.RESETTING})
BEAT_S = 10.0  # the reconciler's period here (beat: 30 s)
LEARNERS = ("alice", "bob", "carol", "dave", "erin", "frank")
# Fast recovery for tests: orphans are reaped 5 s after creation, a session provisioning for 60 s
# was interrupted, and a host silent for 25 s past its advert's expiry is lost (not less: adverts
# come back up to 20 s after a Redis that lost its data).
FAST_RECOVERY = {
    "LABS_REAP_GRACE_S": "5",
    "LABS_PROVISION_TIMEOUT_S": "60",
    "LABS_HOST_LOST_S": "25",
    "LABS_MAX_RUNNING_PER_USER": "20",
    "LABS_START_RATE": "1000",
    "LABS_TTL_S": "1800",
}


def write_fault_lab(content_dir: Path, slug: str = FAULT_LAB) -> str:
    """Two steps on the `tiny` profile; step 1's check takes CHECK_SECONDS."""
    lab = content_dir / "labs" / slug
    (content_dir / "docs" / "en").mkdir(parents=True, exist_ok=True)
    meta = {
        "slug": slug, "title": {"en": "Fault drill", "zh": "故障演练"},
        "summary": {"en": "Survive faults.", "zh": "经受故障。"}, "duration_min": 5,
        "difficulty": "intro", "profile": "tiny", "docs": [], "steps": ["01-file", "02-word"],
    }  # fmt: skip
    steps = {
        "01-file": (f"sleep {CHECK_SECONDS}; test -f /root/hello.txt", "echo hi > /root/hello.txt"),
        "02-word": ("grep -q world /root/hello.txt", "echo world >> /root/hello.txt"),
    }
    for name, (check, solution) in steps.items():
        step = lab / "steps" / name
        step.mkdir(parents=True, exist_ok=True)
        (step / "en.md").write_text(f"Run `{solution}`.\n")
        (step / "zh.md").write_text(f"运行 `{solution}`。\n")
        data = {
            "title": {"en": f"Step {name}", "zh": f"步骤 {name}"},
            "setup": [f"echo {name} >> /tmp/setup.log"],
            "check": [{"guest": {"run": check}, "message": {"en": "not yet", "zh": "还没有"}}],
            "hints": {"en": [f"Try `{solution}`"], "zh": [f"试试 `{solution}`"]},
            "solution": [solution],
        }
        (step / "step.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    (lab / "lab.yaml").write_text(yaml.safe_dump(meta, allow_unicode=True))
    return slug


class WebServer:
    """uvicorn serving portal.asgi with two worker processes, as the Procfile runs it; its
    supervisor replaces a worker that dies."""

    def __init__(self, env: dict[str, str], workers: int = 2):
        self.env, self.workers, self.port = env, workers, servers.free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import urllib.request

        argv = lab_stack.uvicorn_argv(self.env, self.port, self.workers)
        self.proc = subprocess.Popen(argv, cwd=servers.ROOT, env={**os.environ, **self.env})
        login = self.base + "/accounts/login/"
        servers.wait_for(lambda: urllib.request.urlopen(login, timeout=2).status == 200, 60, "uvicorn")  # noqa: S310
        servers.wait_for(lambda: len(self.worker_pids()) == self.workers, 60, "uvicorn workers")

    def worker_pids(self) -> list[int]:
        """The worker processes (multiprocessing children; not its resource tracker)."""
        assert self.proc is not None
        return sorted(
            pid for pid, cmd in descendants(self.proc.pid).items()
            if "multiprocessing" in cmd and "resource_tracker" not in cmd
        )  # fmt: skip

    def kill_worker(self) -> int:
        """SIGKILL one worker (its websockets drop); the supervisor starts another."""
        victim = self.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        servers.wait_for(
            lambda: victim not in self.worker_pids() and len(self.worker_pids()) == self.workers, 60, "a new worker"
        )
        return victim

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 15)
            self.proc = None


@dataclass
class Audit:
    """What is wrong after a fault, once recovery had its chance."""

    orphans: list[str] = field(default_factory=list)  # "host: domain|disk <id>"
    stuck: list[str] = field(default_factory=list)  # "<session> <why>"

    @property
    def clean(self) -> bool:
        return not self.orphans and not self.stuck

    def __str__(self) -> str:
        return f"orphans={self.orphans} stuck={self.stuck}"


@dataclass(frozen=True)
class Row:
    id: str
    state: str
    host: str
    vm_id: str
    error: str
    current_step: int
    checkpoints: list[int]


class FaultStack:
    """A running stack with named hosts; `lost` hosts are the ones a test has taken away for good."""

    def __init__(
        self, tmp: Path, redis_server: servers.RedisServer, env: dict[str, str], web: WebServer,
        exits: contextlib.ExitStack,
    ):  # fmt: skip
        self.tmp, self.redis_server, self.env, self.web, self._exits = tmp, redis_server, env, web, exits
        self.hosts: dict[str, HostBox] = {}
        self.lost: set[str] = set()
        self.db = tmp / "virtlab.sqlite3"
        self._clients: dict[str, lab_stack.LabClient] = {}

    @property
    def base(self) -> str:
        return self.web.base

    @property
    def redis_url(self) -> str:
        return self.redis_server.url

    def client(self, username: str) -> lab_stack.LabClient:
        if username not in self._clients:
            client = lab_stack.LabClient(self.base)
            client.login(username, lab_stack.STACK_PASSWORD)
            self._clients[username] = client
        return self._clients[username]

    def clients(self) -> list[lab_stack.LabClient]:
        """Every learner logged in so far."""
        return list(self._clients.values())

    # --- hosts

    def add_host(self, name: str, **worker_env: str) -> HostBox:
        """A host in a box of its own, with its workers running (removed when the stack stops)."""
        box = self._exits.enter_context(host_box(name))
        self.hosts[name] = box
        box.start_workers({**self.env, **worker_env})
        return box

    # --- the DB, as the test sees it

    def rows(self) -> list[Row]:
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
            rows = conn.execute(
                "SELECT id, state, host, vm_id, error, current_step, checkpoints FROM labs_labsession"
            ).fetchall()
        return [Row(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6] or "[]")) for r in rows]

    def row(self, session_id: str) -> Row:
        return next(r for r in self.rows() if r.id == session_id)

    def results(self, session_id: str) -> set[int]:
        """Steps of the session that have a recorded verdict."""
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
            rows = conn.execute("SELECT step FROM labs_stepresult WHERE session_id = ?", (session_id,))
            return {int(r[0]) for r in rows.fetchall()}

    def pool_vms(self, host: str) -> set[str]:
        with contextlib.closing(sqlite3.connect(self.db, timeout=30)) as conn:
            rows = conn.execute("SELECT id FROM labs_poolvm WHERE host = ? AND state != 'assigned'", (host,))
            return {r[0] for r in rows.fetchall()}

    # --- recovery and its audit

    def reconcile(self) -> None:
        """What beat sends every 30 s: expiry, placement, lost hosts, then each host reconciles itself."""
        from celery import Celery

        sender = Celery(broker=self.redis_url)
        try:
            sender.send_task("labs.tasks.reconcile_all", queue="web")
        finally:
            sender.close()

    def audit(self) -> Audit:
        result = Audit()
        rows = self.rows()
        held = redis.Redis.from_url(self.redis_url)
        for name, box in self.hosts.items():
            if name in self.lost:
                continue  # unreachable: what is left on it is reaped when it returns
            keep = {r.vm_id for r in rows if r.host == name and r.state in VM_LIVE} | self.pool_vms(name)
            domains = {d.session_id: d.active for d in box.domains()}
            result.orphans += [f"{name}: domain {sid}" for sid in sorted(set(domains) - keep)]
            result.orphans += [f"{name}: disk {sid}" for sid in sorted(set(box.disk_sessions()) - keep)]
            for r in rows:
                if r.host != name:
                    continue
                if r.state == S.READY and not domains.get(r.vm_id):
                    result.stuck.append(f"{r.id} ready without a running VM")
                if r.state in ENDED - {S.DESTROYED}:
                    result.stuck.append(f"{r.id} {r.state}, its teardown never recorded")
        for r in rows:
            if r.state in TRANSIENT:
                result.stuck.append(f"{r.id} {r.state}")
            if r.state == S.READY and r.current_step not in r.checkpoints:
                result.stuck.append(f"{r.id} ready without the checkpoint of step {r.current_step}")
            if r.state == S.READY and held.exists(hold_key(r.id)):
                result.stuck.append(f"{r.id} ready with its terminal input held back")
        return result

    def beat(self, every: float, stopping: threading.Event) -> None:
        """What celery beat does (every 30 s in production), more often: the tests wait less."""
        while not stopping.wait(every):
            with contextlib.suppress(Exception):  # Redis may be restarting
                self.reconcile()

    def settle(self, timeout: float = 120, every: float = 3.0) -> tuple[Audit, float]:
        """Run the reconciler until the audit is clean (or time runs out); (audit, seconds taken)."""
        started = time.monotonic()
        while True:
            audit = self.audit()
            if audit.clean or time.monotonic() - started > timeout:
                return audit, time.monotonic() - started
            with contextlib.suppress(Exception):  # Redis may still be coming back
                self.reconcile()
            time.sleep(every)


@contextlib.contextmanager
def fault_stack(tmp: Path, persistent_redis: bool = True, **extra_env: str) -> Iterator[FaultStack]:
    """Redis, the DB with the learners, the fault lab and uvicorn; the caller adds hosts
    (`add_host`). Every host, with every VM on it, is removed on exit."""
    with contextlib.ExitStack() as exits:
        redis_server = servers.RedisServer(tmp / "redis", persistent=persistent_redis)
        redis_server.start()
        exits.callback(redis_server.stop)
        env = lab_stack.lab_env(tmp, redis_server.url, **{**FAST_RECOVERY, **extra_env})
        write_fault_lab(Path(env["VIRTLAB_CONTENT_DIR"]))
        lab_stack.prepare(env, *LEARNERS)
        web = WebServer(env)
        exits.callback(web.stop)  # before start(): a server that never answers is stopped too
        web.start()
        stack = FaultStack(tmp, redis_server, env, web, exits)
        stopping = threading.Event()
        beat = threading.Thread(target=stack.beat, args=(BEAT_S, stopping), name="beat", daemon=True)
        beat.start()
        exits.callback(stopping.set)
        yield stack
