"""Benchmark the lab engine end to end: what a learner waits for, through HTTP, websockets and Redis.

    .venv/bin/python bench/labs.py [--quick]

Starts a private stack (Redis, SQLite, uvicorn, a host-agent Celery worker) and measures:
click → shell prompt in the terminal websocket, cold (a fresh boot) and from the warm pool (a VM
prepared for the lab: warm_start; without --quick also a generic VM of its profile: warm_generic);
keystroke → echo latency with 1 and N running labs; Check → verdict latency. Cold start is also given relative to
a bare QEMU boot of the same image (bench/vm.py's bare_boot). Last line:
RESULT warm_start_p95_s=… cold_start_ratio=… echo_p95_ms=… check_p95_s=… [warm_generic_p95_s=…]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.vm import DEFAULT_IMAGE, PROMPT, bare_boot, p95, summary
from tests import lab_stack, processes, servers

ECHO_CHARS = "abcdefghijklmnopqrstuvwxyz"


@contextmanager
def agent(
    env: dict[str, str], concurrency: int, pool: str, stop_timeout: float = 30, checks: int | None = None
) -> Iterator[None]:
    """The host agent (worker on host.<name> + web, with relay and adverts) and the host's check
    worker (host.<name>.checks, `checks` processes; default: as many as the agent), as `make run`
    starts them."""
    host = env["VIRTLAB_HOST_NAME"]
    procs = [worker(env, host, f"host.{host},web", concurrency, pool),
             worker(env, f"{host}-checks", f"host.{host}.checks", checks or concurrency, pool)]  # fmt: skip
    try:
        lab_stack.wait_for_advert(env["REDIS_URL"], host)
        yield
    finally:
        for proc in procs:  # both told at once: their warm shutdowns overlap
            proc.terminate()
        for proc in procs:
            processes.stop_process(proc, stop_timeout)


def worker(env: dict[str, str], name: str, queues: str, concurrency: int, pool: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(servers.VENV_BIN / "celery"), "-A", "portal", "worker", "-n", f"{name}@%h", "-Q", queues,
         "-c", str(concurrency), "--without-heartbeat", "--without-mingle", "--without-gossip", "-l", "WARNING"],
        cwd=servers.ROOT, env={**os.environ, **env, "LABS_POOL_SIZES": pool},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def pool_ready(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM labs_poolvm WHERE state='ready'").fetchone()[0])


def start_to_prompt(client: lab_stack.LabClient, slug: str, phase: str = "cold") -> tuple[str, float, Any]:
    """(session id, seconds from the Start request to a prompt on the terminal, open terminal ws)."""
    started = time.monotonic()
    status, body = client.request("POST", "/api/sessions", {"lab": slug})
    assert status == 201, body
    sid = body["id"]
    with client.websocket(f"/ws/sessions/{sid}/events/") as events:
        while True:
            message = json.loads(events.recv(timeout=180))
            stage = message.get("stage") or message.get("session", {}).get("state")
            stages.setdefault(f"{phase}:{stage}", []).append(time.monotonic() - started)
            if message.get("type") == "session" and message["session"]["state"] == "ready":
                break
            if message.get("type") == "session" and message["session"]["state"] in {"failed", "destroyed"}:
                raise RuntimeError(f"session {sid}: {message['session']['error']}")
    stages.setdefault(f"{phase}:terminal", []).append(time.monotonic() - started)
    term = client.websocket(f"/ws/sessions/{sid}/terminal/")
    output = b""
    while not PROMPT.search(output):
        frame = term.recv(timeout=60)
        if isinstance(frame, bytes):
            output += frame
    return sid, time.monotonic() - started, term


def echo_latencies(term: Any, samples: int) -> list[float]:
    """Seconds from sending one character to seeing it echoed by the guest shell."""
    times = []
    for i in range(samples):
        char = ECHO_CHARS[i % len(ECHO_CHARS)].encode()
        if i and i % 20 == 0:
            term.send(b"\x15")  # Ctrl-U: keep the line short
            time.sleep(0.05)
            drain(term)
        started = time.monotonic()
        term.send(char)
        while True:
            frame = term.recv(timeout=10)
            if isinstance(frame, bytes) and char in frame:
                break
        times.append(time.monotonic() - started)
    term.send(b"\x15")
    return times


def drain(term: Any) -> None:
    try:
        while True:
            term.recv(timeout=0.05)
    except TimeoutError:
        return


def check_latencies(client: lab_stack.LabClient, sid: str, runs: int) -> list[float]:
    """Seconds from POST check to the verdict arriving on the events websocket."""
    times = []
    with client.websocket(f"/ws/sessions/{sid}/events/") as events:
        events.recv(timeout=10)  # the current state
        for _ in range(runs):
            started = time.monotonic()
            status, body = client.request("POST", f"/api/sessions/{sid}/check", {"step": 1})
            assert status == 202, body
            while True:
                message = json.loads(events.recv(timeout=60))
                if message.get("type") == "session" and "1" in message["session"]["results"]:
                    at = message["session"]["results"]["1"]["at"]
                    if at not in seen_results:
                        seen_results.add(at)
                        break
            times.append(time.monotonic() - started)
    return times


seen_results: set[str] = set()
stages: dict[str, list[float]] = {}  # when each progress stage arrived, seconds after Start


def stop(client: lab_stack.LabClient, sid: str, term: Any, wait: bool = False) -> None:
    term.close()
    client.request("POST", f"/api/sessions/{sid}/stop")
    if wait:  # a VM being torn down slows libvirt for the next start: keep cold starts isolated
        lab_stack.wait_for_state(client, sid, {"destroyed"}, 60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run of each, echo under 1 lab only: < 60 s")
    args = parser.parse_args()
    cold_runs, warm_runs, load, echo_n, check_n = (1, 1, 0, 20, 3) if args.quick else (3, 3, 10, 100, 10)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_name, servers.private_redis() as redis_url:
        tmp = Path(tmp_name)
        env = lab_stack.lab_env(
            tmp, redis_url, LABS_MAX_RUNNING_PER_USER="50", LABS_START_RATE="1000", LABS_CHECK_RATE="1000"
        )
        slug = lab_stack.write_test_lab(Path(env["VIRTLAB_CONTENT_DIR"]))
        lab_stack.prepare(env, "bench")
        db = tmp / "virtlab.sqlite3"
        try:
            with lab_stack.asgi_server(env) as base:
                client = lab_stack.LabClient(base)
                client.login("bench", lab_stack.STACK_PASSWORD)
                bare = [bare_boot(DEFAULT_IMAGE) for _ in range(1 if args.quick else 3)]
                cold, warm, warm_generic, echo_1, echo_n_labs, checks = [], [], [], [], [], []
                with agent(env, concurrency=4, pool="tiny=0"):
                    for _ in range(cold_runs):
                        sid, seconds, term = start_to_prompt(client, slug)
                        cold.append(seconds)
                        echo_1 += echo_latencies(term, echo_n)
                        checks += check_latencies(client, sid, check_n)
                        stop(client, sid, term, wait=True)
                    # --quick skips the many-labs run: each extra boot costs ~6-20 s of TCG CPU.
                    running = [start_to_prompt(client, slug, "load") for _ in range(load)]
                    for i, (_sid, _s, term) in enumerate(running):
                        echo_n_labs += echo_latencies(term, max(echo_n // load, 5) if i else echo_n // 2)
                    for sid, _s, term in running:
                        stop(client, sid, term)
                # A VM prepared for the lab (step 1 set up in advance) and, unless --quick (each warm
                # VM is another boot), a generic VM of its profile.
                pool = f"lab:{slug}=1" if args.quick else f"tiny=1,lab:{slug}=1"
                # Stopping need not wait for the pool's refill boot (the finally below removes its VM).
                with agent(env, concurrency=2, pool=pool, stop_timeout=3):
                    for _ in range(warm_runs):
                        servers.wait_for(lambda: pool_ready(db) == pool.count("=1"), 180, "the warm pool")
                        # A learner meets a pool VM that has idled a while: by then the relay has
                        # held its console for over QEMU's 1 s pty-reconnect poll (labs/relay.py).
                        time.sleep(2)
                        handed_out = [start_to_prompt(client, slug, "warm")]
                        warm.append(handed_out[0][1])
                        if not args.quick:
                            handed_out.append(start_to_prompt(client, slug, "generic"))
                            warm_generic.append(handed_out[1][1])
                        for sid, _s, term in handed_out:
                            stop(client, sid, term)
        finally:
            lab_stack.destroy_vms_with_prefix(env["LABS_ID_PREFIX"])
    print(summary("bare qemu boot", bare, "s"))
    print(summary("click->prompt cold", cold, "s"))
    print(summary("click->prompt warm, prepared", warm, "s"))
    if warm_generic:
        print(summary("click->prompt warm, generic", warm_generic, "s"))
    print(summary("echo, 1 lab running", echo_1, "ms", 1000))
    if not echo_n_labs:  # --quick: the echo under load is the 1-lab echo
        echo_n_labs = echo_1
    print(summary(f"echo, {max(load, 1)} labs running", echo_n_labs, "ms", 1000))
    print(summary("check->verdict", checks, "s"))
    print("stages (median s after Start):", ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in stages.items()))
    print(f"total {time.monotonic() - t0:.1f}s")
    ratio = statistics.median(cold) / statistics.median(bare)
    print(
        f"RESULT warm_start_p95_s={p95(warm):.2f} cold_start_ratio={ratio:.2f} "
        f"echo_p95_ms={p95(echo_n_labs) * 1000:.1f} check_p95_s={p95(checks):.2f}"
        + (f" warm_generic_p95_s={p95(warm_generic):.2f}" if warm_generic else "")
    )


if __name__ == "__main__":
    main()
