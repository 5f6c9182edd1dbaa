"""A drill on a fault stack: learners starting sessions, what each fault's `Outcome` records, and
the tally of many outcomes (bench/faults.py)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labs.states import ENDED, SessionState
from tests import lab_stack, servers
from tests.faults.hosts import HostBox
from tests.faults.learner import open_events
from tests.faults.stack import FAULT_LAB, LEARNERS, Audit, FaultStack, write_fault_lab

S = SessionState
BOOT_S = 240.0  # a boot under TCG on 2 busy cores, with other boots competing
RECOVERY_S = 150.0


@dataclass
class Outcome:
    fault: str
    phase: str = ""  # what the session was doing when the fault hit
    problems: list[str] = field(default_factory=list)
    audit: Audit = field(default_factory=Audit)
    recovery_s: float = 0.0  # from the fault until the audit was clean (or gave up)
    session: str = ""  # a session left ready for the next case, if any
    hit_at: float = 0.0  # time.monotonic() when the fault was applied

    def hit(self) -> None:
        self.hit_at = time.monotonic()

    def expect(self, condition: object, problem: str) -> None:
        if not condition:
            self.problems.append(problem)

    @property
    def ok(self) -> bool:
        return not self.problems and self.audit.clean

    def __str__(self) -> str:
        status = "ok" if self.ok else f"problems={self.problems} {self.audit}"
        return f"{self.fault} [{self.phase}] recovered in {self.recovery_s:.1f}s: {status}"


class Drill:
    """One stack and a learner per session; each fault hits the host its session was placed on."""

    def __init__(self, stack: FaultStack):
        self.stack = stack
        self._learners = 0
        self._cold_labs = 0

    def box(self, session_id: str) -> HostBox:
        """The host the session was placed on (placement decides, by capacity; a start waits in
        the queue, with no host, while every host's boot slots are taken)."""
        servers.wait_for(lambda: self.stack.row(session_id).host, BOOT_S, f"{session_id} placed on a host")
        return self.stack.hosts[self.stack.row(session_id).host]

    def learner(self) -> lab_stack.LabClient:
        """A fresh learner login (sessions of different learners never meet a per-user limit)."""
        name = LEARNERS[self._learners % len(LEARNERS)]
        self._learners += 1
        return self.stack.client(name)

    def start(self, client: lab_stack.LabClient, lab: str = FAULT_LAB) -> str:
        status, body = client.request("POST", "/api/sessions", {"lab": lab})
        assert status == 201, body
        return str(body["id"])

    def cold_lab(self) -> str:
        """A new copy of the drill's lab: no host has its template yet, so its first start boots
        and takes step 1's checkpoint after it is ready (a clone's checkpoint is its template)."""
        self._cold_labs += 1
        slug = f"{FAULT_LAB}-cold-{self._cold_labs}"
        return write_fault_lab(Path(self.stack.env["VIRTLAB_CONTENT_DIR"]), slug)

    def drop_lab(self, slug: str) -> None:
        """Remove a lab cold_lab() wrote: stale, its template is reaped once no clone uses it."""
        shutil.rmtree(Path(self.stack.env["VIRTLAB_CONTENT_DIR"]) / "labs" / slug)

    def ready_session(self) -> tuple[lab_stack.LabClient, str]:
        client = self.learner()
        sid = self.start(client)
        lab_stack.wait_for_state(client, sid, {S.READY}, BOOT_S)
        servers.wait_for(lambda: self.stack.row(sid).checkpoints == [1], 60, "step 1's checkpoint")
        return client, sid

    def owner(self, session_id: str) -> lab_stack.LabClient:
        """The logged-in learner who started `session_id`."""
        for client in self.stack.clients():
            status, _ = client.request("GET", f"/api/sessions/{session_id}")
            if status == 200:
                return client
        raise AssertionError(f"nobody owns {session_id}")

    def settle(self, outcome: Outcome) -> None:
        """Let recovery run (the reconciler, every few seconds) until the audit is clean."""
        outcome.audit, _waited = self.stack.settle(RECOVERY_S)
        outcome.recovery_s = time.monotonic() - (outcome.hit_at or time.monotonic())

    def learner_sees_clear_state(self, outcome: Outcome, client: lab_stack.LabClient, sid: str) -> dict[str, Any]:
        """What the learner's page shows on (re)load: a working lab, or an ended one with a reason."""
        events, session = open_events(client, sid)
        events.close()
        state = session["state"]
        outcome.expect(state in {S.READY, *ENDED}, f"{sid} shows {state}")
        # A failed lab says why (the page shows `error` whatever the state; a failed lab's VM is
        # torn down at once, so it may already show as stopped).
        outcome.expect(state != S.FAILED or session["error"], f"{sid} failed without saying why")
        return session


@dataclass
class Tally:
    runs: int = 0
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def orphans(self) -> int:
        return sum(len(o.audit.orphans) for o in self.outcomes)

    @property
    def stuck(self) -> int:
        return sum(len(o.audit.stuck) for o in self.outcomes)

    @property
    def problems(self) -> int:
        return sum(len(o.problems) for o in self.outcomes)


def stop_all(drill: Drill) -> None:
    """Stop every session still running (as its learner), so the next case finds the hosts empty."""
    for row in drill.stack.rows():
        if row.state not in ENDED:
            drill.owner(row.id).request("POST", f"/api/sessions/{row.id}/stop")
