"""Benchmark a class: N seats ready from scratch, and a learner's verdict on the instructor's grid.

    .venv/bin/python bench/classes.py [--seats N] [--checks M] [--quick]

Starts a private stack (Redis, SQLite, uvicorn, a host agent and its check worker with the
Procfile's concurrency, 4 and 2) and goes through the public flow, as an instructor and N learners
would (the classes API over HTTP, websockets): the instructor creates a class of N seats (starting
in an hour) while N learners log in. Creating the class has the host build the lab's template (one
boot and step 1's setup, once per lab and host: every later class of the lab finds it); its time
is printed as template_s. Then the instructor asks for the seats to be prepared now: that request
is t0. Learners wait for the class as a room does: learner i joins with the invite code once the
class reports i seats prepared (each gets their seat's session from the class's prepared VMs) and
opens their terminal; a seat is ready when its shell answers `echo`. Measured from t0: all seats
ready, and the p95 of one seat's readiness (also printed: from a learner's join to their shell).
Then, with the instructor's grid open on its websocket, learners press Check M times (round robin,
a step that fails): the latency from the verdict (the result's stored time) to the grid's frame for
that seat, p95 (a check the host could not run, so no verdict, is counted and its seat dropped).
Targets on the 2-core TCG machine: 30 seats ready <= 20 s, grid update <= 250 ms p95. `--quick`:
3 seats, 12 checks (under 60 s on a quiet machine). Last line:
RESULT seats=<n> seats_ready_s=<x> seat_ready_p95_s=<x> dashboard_p95_ms=<x> template_s=<x>
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.labs import agent
from bench.vm import p95
from tests import lab_stack, servers
from tests.lab_stack import LabClient, next_event, read_until

INSTRUCTOR = "teacher"
GRANT = (
    "from django.contrib.auth.models import User\n"
    "from portal.roles import INSTRUCTOR, grant_role\n"
    f"grant_role(User.objects.get(username={INSTRUCTOR!r}), INSTRUCTOR)\n"
)


def log(t0: float, text: str) -> None:
    print(f"[{time.monotonic() - t0:7.1f}s] {text}", flush=True)


def create_class(teacher: LabClient, slug: str, seats: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    body = {"title": "Bench class", "labs": [slug], "seats": seats, "starts_at": (now + timedelta(hours=1)).isoformat(),
            "ends_at": (now + timedelta(hours=3)).isoformat(), "lead_minutes": 10, "grace_minutes": 5}  # fmt: skip
    status, klass = teacher.request("POST", "/api/classes", body)
    if status != 201:
        raise SystemExit(f"creating the class failed: {status} {klass}")
    return dict(klass)


def follow_prepared(teacher: LabClient, class_id: int, seats: int, timeout: float, t0: float,
                    prepared: list[threading.Semaphore]) -> float:  # fmt: skip
    """Poll the class, releasing one waiting learner per seat it reports prepared, until all are;
    returns when (monotonic)."""
    deadline, last = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        _, klass = teacher.request("GET", f"/api/classes/{class_id}")
        now = min(seats, klass["seats_ready"])
        if now > last:
            log(t0, f"seats ready {now}/{seats} (preparing {klass['seats_preparing']})")
            for release in prepared[last:now]:
                release.release()
            last = now
        if last >= seats:
            return time.monotonic()
        time.sleep(0.1)
    for release in prepared[last:]:  # the learners still waiting give up (no seat) rather than hang
        release.release()
    raise SystemExit(f"the class did not get its {seats} seats ready in {timeout:.0f}s")


def logged_in(base: str, user: str) -> LabClient:
    client = LabClient(base)
    client.login(user, lab_stack.STACK_PASSWORD)
    return client


def seat_up(client: LabClient, user: str, code: str, turn: threading.Semaphore) -> tuple[str, LabClient, float, float]:
    """One learner (logged in already, as one waiting for the class): join with the code once
    `turn` is released, wait for the seat's shell to answer. Returns the session id, the client,
    when they joined and when the shell answered (monotonic)."""
    if not turn.acquire(timeout=600):
        raise SystemExit(f"{user}: no seat was prepared for them")
    joined = time.monotonic()
    status, seat = client.request("POST", "/api/classes/join", {"code": code})
    if status != 200 or not seat.get("session"):
        raise SystemExit(f"{user} could not take a seat: {status} {seat}")
    sid = seat["session"]
    lab_stack.wait_for_state(client, sid, {"ready"}, 300)
    with client.websocket(f"/ws/sessions/{sid}/terminal/") as term:
        marker = f"seat-{user}-{{1+1}}".replace("{", "$((").replace("}", "))")
        deadline = time.monotonic() + 60
        while True:  # the first keys may arrive before the console is read: ask again
            term.send(f"echo {marker}\r".encode())
            try:
                read_until(term, re.compile(f"seat-{user}-2".encode()), 2)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
    return sid, client, joined, time.monotonic()


def verdict_on(sid: str, attempts: int) -> Callable[[dict[str, Any]], bool]:
    """A grid frame with the seat of session `sid` at `attempts` checks of step 1 or more."""

    def matches(m: dict[str, Any]) -> bool:
        return m.get("type") == "seat" and m["row"]["session"] == sid and m["row"]["cells"][0]["attempts"] >= attempts

    return matches


def grid_latencies(teacher: LabClient, class_id: int, learners: list[tuple[str, LabClient]], checks: int,
                   t0: float) -> list[float]:  # fmt: skip
    """Check step 1 (not yet done: it fails) round robin; seconds from each stored verdict to the
    grid's frame carrying it."""
    latencies: list[float] = []
    lost = 0
    with teacher.websocket(f"/ws/classes/{class_id}/live/") as grid:
        first = json.loads(grid.recv(timeout=10))
        attempts = {row["session"]: row["cells"][0]["attempts"] for row in first["rows"] if row["session"]}
        for n in range(checks):
            sid, client = learners[n % len(learners)]
            want = attempts.get(sid, 0) + 1
            status, body = client.request("POST", f"/api/sessions/{sid}/check", {"step": 1})
            if status != 202:
                raise SystemExit(f"check refused: {status} {body}")
            try:
                frame = next_event(grid, verdict_on(sid, want), 60)
            except AssertionError:  # no verdict: the check failed on the host (the seat's lab ended)
                lost += 1
                learners = [(s, c) for s, c in learners if s != sid]
                log(t0, f"check {n + 1}: no verdict for {sid} within 60 s; its seat leaves the rotation")
                if not learners:
                    break
                continue
            arrived = time.time()
            attempts[sid] = frame["row"]["cells"][0]["attempts"]
            _, session = client.request("GET", f"/api/sessions/{sid}")
            stored = datetime.fromisoformat(session["results"]["1"]["at"]).timestamp()
            latencies.append(arrived - stored)
        log(t0, f"{len(latencies)} verdicts ({lost} checks without one): grid p95 {p95(latencies) * 1000:.0f} ms, "
                f"max {max(latencies) * 1000:.0f} ms")  # fmt: skip
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seats", type=int, default=30, help="seats in the class (default 30)")
    parser.add_argument("--checks", type=int, default=60, help="checks for the grid latency (default 60)")
    parser.add_argument("--quick", action="store_true", help="3 seats, 12 checks: under a minute")
    args = parser.parse_args()
    seats, checks = (3, 12) if args.quick else (args.seats, args.checks)
    t_start = time.monotonic()
    learners = [f"learner{i:03d}" for i in range(1, seats + 1)]
    # Seats share one host: room for them all (slots and check rates are not what this measures).
    room = {"LABS_TTL_S": "3600", "LABS_CHECK_RATE": "1000", "LABS_TCG_VMS_PER_CPU": str(max(16, seats))}
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")  # lab_stack reads a default or two
    with (
        tempfile.TemporaryDirectory(prefix="classes-") as tmp,
        lab_stack.lab_stack(Path(tmp), False, **room) as stack,
        agent(stack.env, 4, "tiny=0", checks=2),  # the Procfile's concurrency
    ):
        lab_stack.create_users(stack.env, lab_stack.STACK_PASSWORD, INSTRUCTOR, *learners)
        stack.shell(GRANT)
        teacher = stack.client(INSTRUCTOR)
        created = time.monotonic()
        klass = create_class(teacher, stack.slug, seats)
        class_id, code = klass["id"], klass["invites"][0]["code"]
        with ThreadPoolExecutor(max_workers=min(seats, 16)) as pool:  # learners waiting for the class
            clients = list(pool.map(lambda u: logged_in(stack.base, u), learners))
        servers.wait_for(lambda: lab_stack.lab_templates(stack), 300, "the lab's template")
        template_s = time.monotonic() - created
        log(t_start, f"stack up; class {class_id} of {seats} seats created, its lab's template built in "
                     f"{template_s:.1f}s; {seats} learners logged in")  # fmt: skip

        turns = [threading.Semaphore(0) for _ in learners]
        with ThreadPoolExecutor(max_workers=seats) as pool:
            t0 = time.monotonic()
            status, body = teacher.request("POST", f"/api/classes/{class_id}/actions", {"action": "provision"})
            if status != 200:
                raise SystemExit(f"provisioning refused: {status} {body}")
            joining = pool.map(lambda a: seat_up(*a), zip(clients, learners, [code] * seats, turns, strict=True))
            prepared = follow_prepared(teacher, class_id, seats, 600, t0, turns)
            log(t0, f"all {seats} seats prepared in {prepared - t0:.1f}s")
            up = list(joining)
        ready = [at - t0 for _, _, _, at in up]
        waited = [at - joined for _, _, joined, at in up]
        log(t0, f"every seat's shell answers: all {max(ready):.1f}s, p95 {p95(ready):.1f}s "
                f"(join to shell: p95 {p95(waited):.2f}s, max {max(waited):.2f}s)")  # fmt: skip

        latencies = grid_latencies(teacher, class_id, [(sid, c) for sid, c, _, _ in up], checks, t0)
        teacher.request("POST", f"/api/classes/{class_id}/actions", {"action": "end"})
    print(f"RESULT seats={seats} seats_ready_s={max(ready):.2f} seat_ready_p95_s={p95(ready):.2f} "
          f"dashboard_p95_ms={p95(latencies) * 1000:.0f} template_s={template_s:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
