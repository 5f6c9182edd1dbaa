"""Isolation between learners, measured: well-behaved learners with real labs while one abuser floods.

    .venv/bin/python bench/isolation.py [--quick] [--learners N] [--abuse-s S]

Starts a private stack as `make run` does (Redis, SQLite, uvicorn, the host agent with 4 workers
and the check worker with 2, all limits at their defaults) and N learners (30; --quick: 1, so
that its two VMs boot at once), each with a real lab session (a VM of the `tiny` profile). Each
learner types at a human rate (about 4 keys/s) into their terminal websocket, timing every
keystroke's echo, and presses Check every 12-24 s, timing the verdict on the events websocket.
After a quiet baseline, one abusive learner (in a process of its own, so that its flood cannot
slow the measuring loop) floods everything the limits cover, for --abuse-s seconds (60; --quick: 8):
  - in their guest: `yes` on the console, a fork bomb, a CPU burn and a disk fill;
  - terminal input: 64 KiB frames as fast as the sockets take them, on sockets that never read;
  - websockets: far more terminal and events sockets than a user may hold, reopened as closed;
  - checks: POST check in a loop; HTTP: bursts of concurrent page and API requests and starts.

Targets (issue #13), for the well-behaved learners while the abuser runs:
  echo p95 <= 50 ms, check p95 <= 1 s, Redis memory growth <= 32 MiB, web RSS growth <= 64 MiB.
(Growth: the largest sample during the abuse and the settling after it, less the baseline taken
with every learner connected.) The baseline's echo and check p95 and the machine's load average
are printed too: on a machine other work keeps busy, they show what is the abuser's doing. Last line:
RESULT echo_p95_ms=<x> check_p95_s=<x> redis_growth_mib=<x> web_rss_growth_mib=<x>
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import queue
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from math import inf
from pathlib import Path
from typing import Any

import django
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.labs import agent
from bench.vm import PROMPT, p95, summary
from tests import lab_stack

TARGETS = {"echo_p95_ms": 50.0, "check_p95_s": 1.0, "redis_growth_mib": 32.0, "web_rss_growth_mib": 64.0}
KEYS = b"abcdefghijklmnopqrstuvwxyz"
# What the abuser runs in their own guest: disk fill, CPU burn, a fork bomb, and `yes` on the console.
GUEST_ABUSE = (
    b"dd if=/dev/zero of=/root/fill bs=1M 2>/dev/null & while :; do :; done & f(){ f|f & }; (sleep 5; f) & yes\n"
)
MIB = 1024 * 1024


def uvicorn_pid(base: str) -> int:
    """The uvicorn process serving `base` (lab_stack.asgi_server runs one, without workers)."""
    port = base.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"uvicorn" in a for a in argv[:2]) and b"--port" in argv and port.encode() in argv:
            return int(entry.name)
    raise RuntimeError(f"no uvicorn process on port {port}")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_mib(client: redis.Redis) -> float:
    return int(client.info("memory")["used_memory"]) / MIB


class Sampler:
    """Redis memory and web RSS once a second, in a thread."""

    def __init__(self, redis_url: str, web_pid: int):
        self.client, self.web_pid = redis.Redis.from_url(redis_url), web_pid
        self.baseline = (0.0, 0.0)
        self.redis: list[float] = []
        self.web: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> tuple[float, float]:
        return redis_mib(self.client), rss_mib(self.web_pid)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            r, w = self.sample()
            self.redis.append(r)
            self.web.append(w)

    def __enter__(self) -> Sampler:
        self.baseline = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        r, w = self.sample()  # after the abuse and a few seconds of settling
        self.redis.append(r)
        self.web.append(w)


# --- the well-behaved learners (one asyncio loop in this process)


@dataclass
class Learner:
    client: lab_stack.LabClient
    sid: str
    terminal: ClientConnection | None = None
    events: ClientConnection | None = None
    output: bytearray = field(default_factory=bytearray)
    got_output: asyncio.Event = field(default_factory=asyncio.Event)
    results_at: str | None = None
    got_result: asyncio.Event = field(default_factory=asyncio.Event)
    echo: dict[str, list[float]] = field(default_factory=dict)  # by phase
    checks: dict[str, list[float]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)  # status and reason of each refused check

    def ws_headers(self) -> dict[str, str]:
        cookies = "; ".join(f"{c.name}={c.value}" for c in self.client.jar)
        return {"Cookie": cookies, "Origin": self.client.base}

    async def open(self) -> None:
        base = self.client.base.replace("http://", "ws://")
        self.terminal = await connect(f"{base}/ws/sessions/{self.sid}/terminal/", additional_headers=self.ws_headers(),
                                      open_timeout=30, max_size=None)  # fmt: skip
        self.events = await connect(f"{base}/ws/sessions/{self.sid}/events/", additional_headers=self.ws_headers(),
                                    open_timeout=30, max_size=None)  # fmt: skip

    async def read_terminal(self) -> None:
        assert self.terminal is not None
        async for frame in self.terminal:
            if isinstance(frame, bytes):
                self.output += frame
                del self.output[:-4096]
                self.got_output.set()

    async def read_events(self) -> None:
        assert self.events is not None
        async for raw in self.events:
            message = json.loads(raw)
            if message.get("type") != "session":
                continue
            result = message["session"]["results"].get("1")
            at = result["at"] if result else None
            if at != self.results_at:
                self.results_at = at
                self.got_result.set()

    async def wait_for_output(self, pattern: bytes | None, since: int, timeout: float) -> bool:
        """Whether `pattern` (or the prompt) appears in output after position `since` in time."""
        deadline = time.monotonic() + timeout
        while True:
            tail = bytes(self.output[since:])
            if (pattern in tail) if pattern is not None else PROMPT.search(tail):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.got_output.clear()
            try:
                await asyncio.wait_for(self.got_output.wait(), remaining)
            except TimeoutError:
                return False

    async def type_keys(self, until: float, phase: str) -> None:
        """One key every 0.15-0.35 s, each timed from send to echo; Ctrl-U every 20 keys."""
        assert self.terminal is not None
        n = 0
        while time.monotonic() < until:
            key = KEYS[n % len(KEYS) : n % len(KEYS) + 1]
            n += 1
            if n % 20 == 0:
                await self.terminal.send(b"\x15")
                await asyncio.sleep(0.1)
            mark = len(self.output)
            started = time.monotonic()
            await self.terminal.send(key)
            seen = await self.wait_for_output(key, mark, 10)
            self.echo.setdefault(phase, []).append(time.monotonic() - started if seen else 10.0)
            await asyncio.sleep(random.uniform(0.15, 0.35))

    async def press_check(self, until: float, phase: str) -> None:
        """Check step 1 every 12-24 s (the first within 8 s), timed from the click to a new verdict on
        the events socket."""
        await asyncio.sleep(min(random.uniform(0, 8), max(0.0, until - time.monotonic())))
        while time.monotonic() < until:
            self.got_result.clear()
            started = time.monotonic()
            status, body = await asyncio.to_thread(self.client.request, "POST", f"/api/sessions/{self.sid}/check",
                                                   {"step": 1})  # fmt: skip
            if status != 202:
                detail = body.get("detail", body) if isinstance(body, dict) else body
                self.refused.append(f"{status} {str(detail)[:50]}")
            else:
                try:
                    await asyncio.wait_for(self.got_result.wait(), 30)
                    elapsed = time.monotonic() - started
                except TimeoutError:
                    elapsed = 30.0
                self.checks.setdefault(phase, []).append(elapsed)
            # Never past the phase's end: the next phase starts on time.
            await asyncio.sleep(min(random.uniform(12, 24), max(0.0, until - time.monotonic())))


async def run_learners(learners: list[Learner], phases: list[tuple[str, float]], marks: dict[str, float]) -> None:
    """Connect every learner, then type and check through each (name, seconds) phase; `marks` gets
    the time each phase began."""
    await asyncio.gather(*(learner.open() for learner in learners))
    readers = [asyncio.create_task(r) for lr in learners for r in (lr.read_terminal(), lr.read_events())]
    for learner in learners:
        assert learner.terminal is not None
        await learner.terminal.send(b"\n")
    ok = await asyncio.gather(*(lr.wait_for_output(None, 0, 60) for lr in learners))
    assert all(ok), "a learner's terminal never showed a prompt"
    for name, seconds in phases:
        marks[name] = time.time()
        until = time.monotonic() + seconds
        await asyncio.gather(*(lr.type_keys(until, name) for lr in learners),
                             *(lr.press_check(until, name) for lr in learners))  # fmt: skip
    for task in readers:
        task.cancel()
    for learner in learners:
        for ws in (learner.terminal, learner.events):
            if ws is not None:
                await ws.close()


# --- the abuser (a process of its own)


ABUSES = ("guest", "flood", "sockets", "checks", "http")


def abuse(base: str, username: str, sid: str, slug: str, seconds: float, kinds: set[str], go: Any, report: Any) -> None:
    """Flood everything (of `kinds`) for `seconds` once `go` is set; put a dict of counts on `report`."""
    # On a real deployment the abuser's client runs on their own machine, not on the host's cores
    # it floods: here it shares them, so it yields to the host's processes (they stay at 0).
    os.nice(10)
    client = lab_stack.LabClient(base)
    client.login(username, lab_stack.STACK_PASSWORD)
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def count(what: str, n: int = 1) -> None:
        with lock:
            counts[what] = counts.get(what, 0) + n

    go.wait()
    until = time.monotonic() + seconds

    def checks() -> None:
        while time.monotonic() < until:
            status, _ = client.request("POST", f"/api/sessions/{sid}/check", {"step": 1})
            count(f"check {status}")

    def http_bursts() -> None:
        paths = [f"/api/sessions/{sid}", f"/labs/{slug}/", "/"]
        with ThreadPoolExecutor(12) as pool:
            while time.monotonic() < until:
                burst = [pool.submit(client.request, "GET", random.choice(paths)) for _ in range(60)]
                burst += [pool.submit(client.request, "POST", "/api/sessions", {"lab": slug}) for _ in range(5)]
                for future in burst:
                    try:
                        count(f"http {future.result()[0]}")
                    except Exception:
                        count("http error")
                time.sleep(2)

    jobs = [checks, checks] if "checks" in kinds else []
    jobs += [http_bursts] if "http" in kinds else []
    threads = [threading.Thread(target=job, daemon=True) for job in jobs]
    for thread in threads:
        thread.start()
    asyncio.run(_abuse_sockets(client, sid, until, kinds, count))
    for thread in threads:
        thread.join(timeout=60)
    report.put(counts)


async def _abuse_sockets(client: lab_stack.LabClient, sid: str, until: float, kinds: set[str], count: Any) -> None:
    base = client.base.replace("http://", "ws://")
    cookies = "; ".join(f"{c.name}={c.value}" for c in client.jar)
    headers = {"Cookie": cookies, "Origin": client.base}

    async def open_ws(kind: str) -> ClientConnection | None:
        try:
            # close_timeout: a socket the server has stopped reading (past its rate) must not
            # hold the abuser's wind-down for the default 10 s each.
            ws = await connect(f"{base}/ws/sessions/{sid}/{kind}/", additional_headers=headers, open_timeout=30,
                               max_size=None, close_timeout=1)  # fmt: skip
        except Exception:
            count(f"{kind} refused")
            return None
        count(f"{kind} opened")
        return ws

    async def guest() -> None:
        """`yes`, a fork bomb, a CPU burn and a disk fill in their own VM; then read the flood."""
        while time.monotonic() < until:
            ws = await open_ws("terminal")
            if ws is None:
                await asyncio.sleep(0.5)
                continue
            received = 0
            try:  # a socket over the abuser's share is accepted and closed at once (4429)
                await ws.send(GUEST_ABUSE)
                while time.monotonic() < until:
                    frame = await asyncio.wait_for(ws.recv(), max(0.1, until - time.monotonic()))
                    received += len(frame)
            except (ConnectionClosed, TimeoutError):
                pass
            count("terminal output bytes", received)
            await ws.close()

    async def flood() -> None:
        """64 KiB frames as fast as they go, never reading: reopened when closed."""
        frame = b"x" * 64 * 1024
        while time.monotonic() < until:
            ws = await open_ws("terminal")
            if ws is None:
                await asyncio.sleep(0.2)
                continue
            try:
                while time.monotonic() < until:
                    # Bounded: past its rate the server stops reading, and a send waits on TCP.
                    await asyncio.wait_for(ws.send(frame), max(0.1, until - time.monotonic()))
                    count("flood frames")
            except ConnectionClosed:
                count("flood closed")
            except TimeoutError:
                pass
            await ws.close()

    async def hoard(kind: str) -> None:
        """Hold as many sockets as will open, never reading; try for more twice a second."""
        held: list[ClientConnection] = []
        while time.monotonic() < until:
            ws = await open_ws(kind)
            if ws is not None:
                held.append(ws)
            await asyncio.sleep(0.5 if len(held) > 4 else 0.05)
        await asyncio.gather(*(ws.close() for ws in held))

    jobs = [guest()] if "guest" in kinds else []
    jobs += [flood() for _ in range(4)] if "flood" in kinds else []
    jobs += [hoard("events"), hoard("events"), hoard("terminal")] if "sockets" in kinds else []
    await asyncio.gather(*jobs)


# --- the run


def guest_check_times(db: Path, marks: dict[str, float]) -> dict[str, list[float]]:
    """Per phase, the seconds each stored check spent running its commands in the guest (all
    sessions, the abuser's too), from the stack's database."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT strftime('%s', created_at) + 0.0, duration_s FROM labs_stepresult").fetchall()
    bounds = sorted(marks.items(), key=lambda item: item[1])
    times: dict[str, list[float]] = {name: [] for name, _ in bounds if name != "after"}
    for created, duration in rows:
        phase = next((name for name, start in reversed(bounds) if created >= start), None)
        if phase in times:
            times[phase].append(float(duration))
    return times


def start_sessions(clients: list[lab_stack.LabClient], slug: str, timeout: float) -> list[str | None]:
    """Start one lab per client at once (placement queues what does not fit yet); wait for each to
    be ready. None for a lab that ended instead (a boot that timed out on a loaded machine)."""
    sids = []
    for client in clients:
        status, body = client.request("POST", "/api/sessions", {"lab": slug})
        assert status == 201, body
        sids.append(body["id"])
    ready: list[str | None] = []
    for client, sid in zip(clients, sids, strict=True):
        session = lab_stack.wait_for_state(client, sid, {"ready", "failed", "destroyed"}, timeout)
        if session["state"] != "ready":
            print(f"lab {sid} did not start: {session['error']}", flush=True)
        ready.append(sid if session["state"] == "ready" else None)
    return ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 learner, 8 s of abuse: < 60 s on an idle machine")
    parser.add_argument("--learners", type=int, help="well-behaved learners (30; --quick: 1)")
    parser.add_argument("--abuse-s", type=float, help="seconds of abuse (60; --quick: 8)")
    parser.add_argument("--abuse", default=",".join(ABUSES), help=f"what the abuser does (all of {','.join(ABUSES)})")
    args = parser.parse_args()
    kinds = set(args.abuse.split(","))
    n = args.learners or (1 if args.quick else 30)
    abuse_s = args.abuse_s or (8.0 if args.quick else 60.0)
    baseline_s = 3.0 if args.quick else 20.0
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_name, lab_stack.private_redis() as redis_url, ExitStack() as stack:
        tmp = Path(tmp_name)
        # Defaults for every limit; only the stack's own paths, names and content differ.
        env = lab_stack.lab_env(tmp, redis_url, LOG_LEVEL="ERROR")  # the limits' warnings would drown the figures
        os.environ.update(env)  # this process reads the same settings (lab_stack needs some)
        django.setup()
        slug = lab_stack.write_test_lab(Path(env["VIRTLAB_CONTENT_DIR"]))
        names = [f"learner{i:02d}" for i in range(n)]
        lab_stack.manage(env, "migrate", "--noinput")
        lab_stack.manage(env, "collectstatic", "--noinput")
        lab_stack.create_users(env, lab_stack.STACK_PASSWORD, "abuser", *names)
        stack.callback(lab_stack.destroy_vms_with_prefix, env["LABS_ID_PREFIX"])
        base = stack.enter_context(lab_stack.asgi_server(env))
        stack.enter_context(agent(env, 4, "tiny=0", checks=2))  # the Procfile's concurrency
        web_pid = uvicorn_pid(base)
        print(f"[{time.monotonic() - t0:.0f}s] stack up", flush=True)
        # The lab's template first, as a class has it built: every lab is then a clone, and no
        # template build (a boot) is left to run beside what is measured, as a cold start's would.
        running = lab_stack.LabStack(base, env, slug, redis_url)
        running.shell(f"from labs import task_calls; task_calls.prepare_template.on({running.host!r}, {slug!r})")
        lab_stack.wait_for(lambda: lab_stack.lab_templates(running), 180, "the lab's template")
        print(f"[{time.monotonic() - t0:.0f}s] the lab's template built", flush=True)
        abuser = lab_stack.LabClient(base)
        abuser.login("abuser", lab_stack.STACK_PASSWORD)
        clients = [abuser] + [lab_stack.LabClient(base) for _ in names]
        for client, name in zip(clients[1:], names, strict=True):
            client.login(name, lab_stack.STACK_PASSWORD)
        started = time.monotonic()
        abuser_sid, *sids = start_sessions(clients, slug, 120 + 30 * len(clients))
        boot_s = time.monotonic() - started
        learners = [Learner(c, sid) for c, sid in zip(clients[1:], sids, strict=True) if sid is not None]
        assert abuser_sid is not None, "the abuser's lab failed to start"
        assert learners, "every learner's lab failed to start"
        print(f"[{time.monotonic() - t0:.0f}s] {len(learners) + 1} of {len(clients)} labs ready in {boot_s:.0f}s",
              flush=True)  # fmt: skip
        n = len(learners)

        ctx = multiprocessing.get_context("fork")
        go, report = ctx.Event(), ctx.Queue()
        abuser_proc = ctx.Process(target=abuse, args=(base, "abuser", abuser_sid, slug, abuse_s, kinds, go, report))
        abuser_proc.start()
        phases = [("baseline", baseline_s), ("abuse", abuse_s), ("after", 2.0 if args.quick else 5.0)]
        marks: dict[str, float] = {}
        sampler = Sampler(redis_url, web_pid)
        loads: list[float] = []  # this machine's 1-minute load average, as the abuse began and ended
        web_cpu: list[tuple[float, float]] = []  # (when, the web process's CPU seconds) at each phase

        async def run() -> None:
            learning = asyncio.create_task(run_learners(learners, phases, marks))
            for phase in ("baseline", "abuse"):
                while phase not in marks and not learning.done():
                    await asyncio.sleep(0.05)
                web_cpu.append((time.monotonic(), cpu_s(web_pid)))
            # The baseline: every learner connected and typing, before any abuse.
            with sampler:
                loads.append(os.getloadavg()[0])
                go.set()
                await learning
                loads.append(os.getloadavg()[0])
            web_cpu.append((time.monotonic(), cpu_s(web_pid)))

        asyncio.run(run())
        print(f"[{time.monotonic() - t0:.0f}s] learners done", flush=True)
        try:
            counts = report.get(timeout=120)
        except queue.Empty:  # its figures are lost, not the learners'
            counts = {"abuser ended without a report, exit code": abuser_proc.exitcode or 0}
        print(f"[{time.monotonic() - t0:.0f}s] abuser reported", flush=True)
        abuser_proc.join(30)
        print(f"[{time.monotonic() - t0:.0f}s] measured; tearing down", flush=True)
        guest_s = guest_check_times(tmp / "virtlab.sqlite3", marks)

    redis_growth = max(sampler.redis) - sampler.baseline[0]
    web_growth = max(sampler.web) - sampler.baseline[1]

    def of(phase: str, kind: str) -> list[float]:
        return [v for lr in learners for v in getattr(lr, kind).get(phase, [])]

    print(f"machine load average (2 cores): {loads[0]:.1f} as the abuse began, {loads[-1]:.1f} after it")
    (t0_, c0), (t1, c1), (t2, c2) = web_cpu
    print(f"web process CPU: {(c1 - c0) / (t1 - t0_):.2f} s/s in the baseline, {(c2 - c1) / (t2 - t1):.2f} s/s abused")
    print(f"abuser: {json.dumps(counts, sort_keys=True)}")
    refusals = Counter(reason for lr in learners for reason in lr.refused)
    print(f"learners' checks refused: {sum(refusals.values())} {dict(refusals)}")
    for phase in ("baseline", "abuse"):
        for kind, unit, scale in (("echo", "ms", 1000), ("checks", "s", 1)):
            values = of(phase, kind)
            line = summary(f"{kind}, {n} learners, {phase}", values, unit, scale) if values else f"{kind}: none"
            print(line)
    for phase, values in guest_s.items():  # the rest of a check's time is its queue, the web and the DB
        print(summary(f"  of which in the guest, {phase}", values, "s", 1) if values else f"guest, {phase}: none")
    print(f"redis {sampler.baseline[0]:.1f} MiB -> max {max(sampler.redis):.1f}; "
          f"web RSS {sampler.baseline[1]:.1f} MiB -> max {max(sampler.web):.1f}")  # fmt: skip
    figures = {
        "echo_p95_ms": p95(of("abuse", "echo") or [inf]) * 1000, "check_p95_s": p95(of("abuse", "checks") or [inf]),
        "redis_growth_mib": redis_growth, "web_rss_growth_mib": web_growth,
    }  # fmt: skip
    for name, value in figures.items():
        verdict = "pass" if value <= TARGETS[name] else "FAIL"
        print(f"target {name} <= {TARGETS[name]:g}: {value:.2f} {verdict}")
    print(f"total {time.monotonic() - t0:.1f}s")
    print("RESULT " + " ".join(f"{k}={v:.2f}" if k == "check_p95_s" else f"{k}={v:.1f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
