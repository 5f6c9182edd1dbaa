"""The well-behaved learners of bench/isolation.py: real lab sessions driven at the pace the shipped
labs set, one asyncio loop for all of them.

The pace comes from the labs themselves: each gives its duration (`duration_min`, the authors'
estimate) and each step its solution, so a step lasts duration / steps on average (~300 s today)
and asks for about its solution's characters of typing (~150). A learner here goes `speedup` times
faster than that and types TYPED_PER_SOLUTION_CHAR keys per character (typos, `ls`, `cat`...). Each
step it reads, types its keys one by one (0.15-0.35 s apart: ~4 keys/s, every echo timed), then
presses Check (timed until the verdict reaches the events socket).
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect

from bench.vm import PROMPT
from labs.catalog import load_catalog
from tests import lab_stack

KEYS = b"abcdefghijklmnopqrstuvwxyz"
KEY_GAP_S = (0.15, 0.35)
TYPED_PER_SOLUTION_CHAR = 2.0
SHIPPED_LABS = Path(__file__).resolve().parents[1] / "content" / "labs"


@dataclass(frozen=True)
class Pace:
    """One step every `step_s` seconds: reading, `keys` keys typed, then Check."""

    step_s: float
    keys: int

    @classmethod
    def of_labs(cls, speedup: float, root: Path = SHIPPED_LABS) -> Pace:
        labs = load_catalog(root).labs.values()
        step_s = statistics.mean(lab.duration_min * 60 / len(lab.steps) for lab in labs for _ in lab.steps)
        chars = statistics.mean(sum(len(line) + 1 for line in step.solution) for lab in labs for step in lab.steps)
        return cls(step_s / speedup, round(chars * TYPED_PER_SOLUTION_CHAR))

    @property
    def typing_s(self) -> float:
        return self.keys * statistics.mean(KEY_GAP_S)

    @property
    def reading_s(self) -> float:
        return max(0.0, self.step_s - self.typing_s)

    def describe(self, learners: int) -> str:
        return (f"pace: a step every {self.step_s:.0f} s, {self.keys} keys typed (~{self.typing_s:.0f} s) then Check; "
                f"{learners} learners: {learners * self.keys / self.step_s:.1f} keys/s, "
                f"{learners / self.step_s:.2f} checks/s")  # fmt: skip


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
    echo_at: list[tuple[float, float]] = field(default_factory=list)  # (time.time() sent, seconds), all phases
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

    async def work(self, pace: Pace, until: float, phase: Callable[[], str]) -> None:
        """Step after step until `until` (each read, typed, then checked); each figure is filed under
        the phase it began in. Each learner starts at a random point of its step, so that from the
        first second as many type and check as later on."""
        into = random.uniform(0, pace.step_s)
        keys = pace.keys if into < pace.reading_s else round(pace.keys * (pace.step_s - into) / pace.typing_s)
        await asyncio.sleep(max(0.0, pace.reading_s - into))
        while time.monotonic() < until:
            await self.type_keys(keys, until, phase)
            if time.monotonic() < until:
                await self.press_check(phase)
            keys = pace.keys
            await asyncio.sleep(min(pace.reading_s * random.uniform(0.6, 1.4), max(0.0, until - time.monotonic())))

    async def type_keys(self, keys: int, until: float, phase: Callable[[], str]) -> None:
        """`keys` keys, 0.15-0.35 s apart, each timed from send to echo; Ctrl-U every 20 keys."""
        assert self.terminal is not None
        for n in range(1, keys + 1):
            if time.monotonic() >= until:
                return
            if n % 20 == 0:
                await self.terminal.send(b"\x15")
                await asyncio.sleep(0.1)
            key = KEYS[n % len(KEYS) : n % len(KEYS) + 1]
            mark, started, name = len(self.output), time.monotonic(), phase()
            await self.terminal.send(key)
            sent_at = time.time()
            seen = await self.wait_for_output(key, mark, 10)
            latency = time.monotonic() - started if seen else 10.0
            self.echo.setdefault(name, []).append(latency)
            self.echo_at.append((sent_at, latency))
            await asyncio.sleep(random.uniform(*KEY_GAP_S))

    async def press_check(self, phase: Callable[[], str]) -> None:
        """Check step 1 (it fails: nothing typed solves it), timed from the click to a new verdict on
        the events socket."""
        self.got_result.clear()
        started, name = time.monotonic(), phase()
        status, body = await asyncio.to_thread(self.client.request, "POST", f"/api/sessions/{self.sid}/check",
                                               {"step": 1})  # fmt: skip
        if status != 202:
            detail = body.get("detail", body) if isinstance(body, dict) else body
            self.refused.append(f"{status} {str(detail)[:50]}")
            return
        try:
            await asyncio.wait_for(self.got_result.wait(), 30)
            elapsed = time.monotonic() - started
        except TimeoutError:
            elapsed = 30.0
        self.checks.setdefault(name, []).append(elapsed)


async def run_learners(learners: list[Learner], pace: Pace, phases: list[tuple[str, float]],
                       marks: dict[str, float]) -> None:  # fmt: skip
    """Connect every learner, then let them work through the (name, seconds) phases back to back;
    `marks` gets the time each phase began."""
    await asyncio.gather(*(learner.open() for learner in learners))
    readers = [asyncio.create_task(r) for lr in learners for r in (lr.read_terminal(), lr.read_events())]
    for learner in learners:
        assert learner.terminal is not None
        await learner.terminal.send(b"\n")
    ok = await asyncio.gather(*(lr.wait_for_output(None, 0, 60) for lr in learners))
    assert all(ok), "a learner's terminal never showed a prompt"
    start = time.monotonic()
    ends: list[float] = []
    for _name, seconds in phases:
        ends.append((ends[-1] if ends else start) + seconds)

    def phase() -> str:
        now = time.monotonic()
        return next((name for (name, _), end in zip(phases, ends, strict=True) if now < end), phases[-1][0])

    async def mark_phases() -> None:
        for (name, _), began in zip(phases, [start, *ends[:-1]], strict=True):
            await asyncio.sleep(max(0.0, began - time.monotonic()))
            marks[name] = time.time()

    await asyncio.gather(mark_phases(), *(lr.work(pace, ends[-1], phase) for lr in learners))
    for task in readers:
        task.cancel()
    for learner in learners:
        for ws in (learner.terminal, learner.events):
            if ws is not None:
                await ws.close()
