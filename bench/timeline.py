"""Benchmark session timelines: what recording costs the terminal, how big records get, and how fast
a long session's replay opens.

    .venv/bin/python bench/timeline.py [--quick]

Starts a private stack (Redis, SQLite, uvicorn and the host agent: no check is run, so no check
worker) and one real lab session, then measures, in the same run on the same VM:
- keystroke → echo p95 with recording on and off (the host agent restarted with
  LABS_TIMELINE_ENABLED=1/0 between phases, off-on-on-off-off-on; --quick: off-on; the session
  and its VM, a clone of the lab's template built first, stay: no boot competes with it);
- record size per minute of active typing (commands typed at a human rate, with their output),
  gzip-compressed as stored, as MiB per hour;
- time to open the replay of a synthesised 45-minute session in Chromium (navigation to the
  player holding the record with its marks); --quick opens it while the VM boots, which only
  makes that figure pessimistic, so that the whole run stays under a minute.
Targets: echo overhead ≤ 5 ms p95, ≤ 1 MiB per hour of typing, replay opens ≤ 1 s. Last line:
RESULT echo_overhead_ms=<x> mib_per_hour=<x> replay_open_s=<x>
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import django

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.labs import drain, echo_latencies
from bench.vm import p95, summary
from tests import lab_stack, servers
from tests.browser_fixtures import CHROMIUM_ARGS

# What a learner types in a lab, with the output it brings: the record holds both.
COMMANDS = ["ls -la /etc", "cat /etc/hostname", "ip addr", "df -h", "uname -a", "echo hello > /root/a.txt",
            "cat /root/a.txt", "ps", "free -m", "lsblk", "mount | head -5", "dmesg | tail -5"]  # fmt: skip
TYPING_CPS = 5.0  # characters per second: a steady typist reading instructions
SESSION_S = 45 * 60


@contextmanager
def agent(env: dict[str, str], recording: bool) -> Iterator[None]:
    host = env["VIRTLAB_HOST_NAME"]
    with servers.celery_worker({**env, "LABS_TIMELINE_ENABLED": "1" if recording else "0"},
                                 queues=f"host.{host},web", name=host):  # fmt: skip
        lab_stack.wait_for_advert(env["REDIS_URL"], host)
        yield


def terminal(client: lab_stack.LabClient, sid: str) -> Any:
    """The session's terminal socket once the (re)started agent relays it: a fresh echo comes back
    (not one from the scrollback the socket replays first)."""
    term = client.websocket(f"/ws/sessions/{sid}/terminal/")
    term.recv(timeout=10)
    n = random.randrange(10_000, 99_999)
    deadline = time.monotonic() + 90
    while True:
        term.send(f"echo relay-$(({n}+1))\r".encode())
        try:
            lab_stack.read_until(term, re.compile(f"relay-{n + 1}".encode()), 2)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
    drain(term)
    return term


def checkpointed(client: lab_stack.LabClient, sid: str) -> bool:
    return bool(client.request("GET", f"/api/sessions/{sid}")[1]["checkpoints"])


def type_commands(term: Any, seconds: float) -> int:
    """Type commands at TYPING_CPS for `seconds`, reading their output; returns characters typed."""
    typed, deadline, i = 0, time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        for char in COMMANDS[i % len(COMMANDS)] + "\r":
            term.send(char.encode())
            typed += 1
            time.sleep(1 / TYPING_CPS)
        i += 1
        drain(term)
    return typed


def synthetic_record(seconds: float, seed: int = 1) -> str:
    """A session of `seconds`: typing at TYPING_CPS with echoes and output, checks every few minutes
    (failed, then passed), a revert now and then, as the recorder would write it."""
    from labs.timeline import cast

    rng = random.Random(seed)
    lines = [cast.header_line(time.time() - seconds, title="synthetic")]
    t, step = 0.0, 1
    while t < seconds:
        command = rng.choice(COMMANDS)
        for char in command + "\r":
            t += rng.expovariate(TYPING_CPS)
            lines.append(cast.event_line(t, "i", char))
            lines.append(cast.event_line(t + 0.004, "o", char if char != "\r" else "\r\n"))
        lines.append(cast.event_line(t + 0.05, "o", "".join(rng.choice("abcdef0123 \r\n") for _ in range(400))))
        lines.append(cast.event_line(t + 0.06, "o", "root@virtlab:~# "))
        if rng.random() < 0.04:
            ok = rng.random() < 0.5
            reason = {} if ok else {"en": "the file is missing", "zh": "文件不存在"}
            lines.append(cast.event_line(t + 0.1, "m", cast.mark_data("check", step=step, ok=ok, reason=reason)))
            if ok:
                step += 1
                lines.append(cast.event_line(t + 0.2, "m", cast.mark_data("step", step=step)))
            elif rng.random() < 0.2:
                lines.append(cast.event_line(t + 0.3, "m", cast.mark_data("revert", step=step)))
        t += rng.uniform(2, 20)  # reading the instructions
    return "".join(lines)


def store_synthetic(stack: lab_stack.LabStack, text: str) -> str:
    """A finished session of alice's holding `text` as its record; returns its id."""
    path = Path(stack.env["VIRTLAB_VAR_DIR"]) / "synthetic.cast.gz"
    path.write_bytes(gzip.compress(text.encode(), 6))
    out = stack.shell(
        "from pathlib import Path\nfrom django.contrib.auth.models import User\n"
        "from labs.models import LabSession\nfrom labs.timeline.models import SessionTimeline\n"
        f"s = LabSession.objects.create(user=User.objects.get(username='alice'), lab_slug='{stack.slug}', "
        "state='destroyed')\n"
        f"data = Path({str(path)!r}).read_bytes()\n"
        f"SessionTimeline.objects.create(session=s, cast_gz=data, raw_bytes={len(text.encode())}, "
        f"duration_s={SESSION_S}, cut=False)\n"
        "print(s.pk)\n"
    )
    return out.strip().splitlines()[-1]


def replay_of_synthetic(stack: lab_stack.LabStack, opens: int) -> list[float]:
    """A 45-minute session's record stored, then its replay opened `opens` times (seconds each)."""
    text = synthetic_record(SESSION_S)
    print(f"synthetic 45-minute session: {len(text.encode()) / 1024:.0f} KiB, "
          f"{len(gzip.compress(text.encode())) / 1024:.0f} KiB gzipped")  # fmt: skip
    return replay_open_s(stack, store_synthetic(stack, text), opens)


def replay_open_s(stack: lab_stack.LabStack, sid: str, runs: int) -> list[float]:
    """Seconds from navigating to the replay page to the player holding the record with its marks."""
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(stack.base + "/accounts/login/")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", lab_stack.STACK_PASSWORD)
        page.locator("form button[type=submit], form input[type=submit]").first.click()
        page.wait_for_load_state()
        for _ in range(runs):
            page.goto(f"{stack.base}/labs/sessions/{sid}/replay/")
            # A coloured tick: the record fetched and parsed, the player drawn with its marks.
            page.wait_for_selector(".replay-tick-ok, .replay-tick-fail", state="attached", timeout=30_000)
            times.append(page.evaluate("performance.now()") / 1000)
        browser.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one phase each way, short typing")
    args = parser.parse_args()
    # Recording on and off in turn on the same VM (ABBA, so neither side gets the quieter moments).
    phases = (False, True) if args.quick else (False, True, True, False, False, True)
    samples, typing_s, opens = (50, 6, 3) if args.quick else (150, 60, 5)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    django.setup()  # lab_stack reads a few defaults from the settings
    started = time.monotonic()

    def stage(what: str) -> None:  # where the run's time goes (--quick must stay under a minute)
        print(f"{time.monotonic() - started:6.1f} s  {what}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-timeline-") as tmp, ExitStack() as processes:
        running = lab_stack.lab_stack(Path(tmp), agent=False, LABS_TTL_S="1800", LOG_LEVEL="ERROR")
        stack = processes.enter_context(running)
        host = stack.host
        stage("stack up")
        alice = stack.client("alice")
        echo: dict[bool, list[float]] = {True: [], False: []}
        per_phase: list[str] = []
        typed_bytes: list[tuple[int, float]] = []
        sid = ""
        replay: Future[list[float]] | None = None
        for recording in phases:
            with agent(stack.env, recording):
                stage(f"agent up, recording {'on' if recording else 'off'}")
                if not sid:
                    if args.quick:  # the replay is measured while the VM boots (a pessimistic figure)
                        replay = ThreadPoolExecutor(1).submit(replay_of_synthetic, stack, opens)
                    # The lab's template first, as a class has it built (a boot): the session is
                    # then a clone, and no boot is left to compete with what is measured (a cold
                    # start would have the template built right after it, beside the echo).
                    stack.shell(
                        f"from labs import task_calls; task_calls.prepare_template.on({host!r}, {stack.slug!r})"
                    )
                    servers.wait_for(partial(lab_stack.lab_templates, stack), 180, "the lab's template")
                    stage("the lab's template built")
                    status, body = alice.request("POST", "/api/sessions", {"lab": stack.slug})
                    assert status == 201, body
                    sid = body["id"]
                    lab_stack.wait_for_state(alice, sid, {"ready"}, 180)
                    servers.wait_for(partial(checkpointed, alice, sid), 60, "step 1's checkpoint")
                    stage("session ready (a clone), step 1's checkpoint taken")
                with terminal(alice, sid) as term:
                    stage("terminal relayed")
                    echo_latencies(term, 10)  # warm-up: the new agent's first keystrokes
                    latencies = echo_latencies(term, samples)
                    echo[recording] += latencies
                    per_phase.append(f"{'on' if recording else 'off'} {p95(latencies) * 1000:.1f}")
                    stage("echo measured")
                    if recording and not typed_bytes:
                        path = Path(stack.env["VIRTLAB_VAR_DIR"]) / "timelines" / f"{sid}.cast"
                        time.sleep(1)  # flushed
                        before = path.stat().st_size
                        typed = type_commands(term, typing_s)
                        time.sleep(1)
                        chunk = path.read_bytes()[before:]
                        typed_bytes.append((len(gzip.compress(chunk, 6)), typing_s))
                        print(f"typed {typed} chars in {typing_s} s: {len(chunk)} bytes recorded, "
                              f"{typed_bytes[-1][0]} gzipped")  # fmt: skip
                        stage("typing recorded")
            stage("agent stopped")
        alice.request("POST", f"/api/sessions/{sid}/stop")
        opened = replay.result() if replay is not None else replay_of_synthetic(stack, opens)
        stage("replay measured")
    print(f"bench took {time.monotonic() - started:.0f} s")
    print(summary("echo, recording on", echo[True], "ms", 1000))
    print(summary("echo, recording off", echo[False], "ms", 1000))
    print(summary("replay opens (45 min)", opened, "s"))
    # On a shared machine the phases differ by more than recording costs: each phase's p95 shows how much.
    print("echo p95 per phase (ms):", ", ".join(per_phase))
    median_ms = (statistics.median(echo[True]) - statistics.median(echo[False])) * 1000
    print(f"echo overhead at the median: {median_ms:.2f} ms")
    overhead_ms = (p95(echo[True]) - p95(echo[False])) * 1000
    gz, seconds = typed_bytes[0]
    mib_per_hour = gz * (3600 / seconds) / (1024 * 1024)
    print(json.dumps({"echo_on_p95_ms": p95(echo[True]) * 1000, "echo_off_p95_ms": p95(echo[False]) * 1000}))
    print(f"RESULT echo_overhead_ms={overhead_ms:.2f} mib_per_hour={mib_per_hour:.3f} replay_open_s={p95(opened):.2f}")


if __name__ == "__main__":
    main()
