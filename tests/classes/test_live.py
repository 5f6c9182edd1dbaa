"""The instructor's live view on a real stack: a learner's checks on a real VM reach the grid's
cell, with the failure reason, in well under a second; the instructor watches the terminal
read-only (the learner's page is told) and sends a message the learner's page shows.

One stack and one VM for the module (uvicorn, a host agent and its check worker, a private Redis).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests import lab_stack
from tests.lab_stack import next_event, read_until

pytestmark = [pytest.mark.vm, pytest.mark.slow]
PROMPT = re.compile(rb"root@virtlab:[^\r\n]*# ")
# A seat for a learner's running session, in a class the instructor "bob" teaches (the class's
# provisioning and joining are tested with the class pages; here only what the grid shows matters).
MAKE_CLASS = """
from datetime import timedelta
from django.contrib.auth.models import User
from django.utils import timezone
from classes.models import LabClass, Seat
from labs.models import LabSession
from portal.roles import INSTRUCTOR, grant_role
bob, alice = User.objects.get(username="bob"), User.objects.get(username="alice")
grant_role(bob, INSTRUCTOR)
now = timezone.now()
klass = LabClass.objects.create(title="Live", owner=bob, labs=[{slug!r}], seats=1, starts_at=now,
                                ends_at=now + timedelta(hours=1))
session = LabSession.objects.get(pk={sid!r})
seat = Seat.objects.create(klass=klass, user=alice, session=session)
seat.sessions.add(session)
print(klass.pk, seat.pk)
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab_stack.LabStack]:
    with lab_stack.lab_stack(tmp_path_factory.mktemp("livestack"), LABS_TTL_S="600") as running:
        yield running


def seat_row(grid: Any, timeout: float, predicate: Any) -> tuple[dict[str, Any], float]:
    """The first seat row the grid socket gets that satisfies `predicate`, and when it arrived."""
    message = next_event(grid, lambda m: m.get("type") == "seat" and predicate(m["row"]), timeout)
    return message["row"], time.time()


def verdict_at(events: Any, step: int, passed: bool, timeout: float) -> float:
    """When the check stored the verdict on `step` the learner's page is shown next."""

    def shows(m: dict[str, Any]) -> bool:
        result = m.get("session", {}).get("results", {}).get(str(step)) if m.get("type") == "session" else None
        return result is not None and result["passed"] is passed

    result = next_event(events, shows, timeout)["session"]["results"][str(step)]
    return datetime.fromisoformat(result["at"]).timestamp()


def test_checks_reach_the_grid_live_with_the_reason_and_the_instructor_watches_and_messages(
    stack: lab_stack.LabStack,
) -> None:
    alice, bob = stack.client("alice"), stack.client("bob")
    status, session = alice.request("POST", "/api/sessions", {"lab": stack.slug})
    assert status == 201, session
    sid = session["id"]
    lab_stack.wait_for_state(alice, sid, {"ready"}, 180)
    class_id, seat_id = (int(x) for x in stack.shell(MAKE_CLASS.format(slug=stack.slug, sid=sid)).split()[-2:])
    assert bob.request("GET", f"/classes/{class_id}/live")[0] == 200
    assert alice.request("GET", f"/classes/{class_id}/live")[0] == 404

    with (
        bob.websocket(f"/ws/classes/{class_id}/live/") as grid,
        alice.websocket(f"/ws/sessions/{sid}/events/") as events,
        alice.websocket(f"/ws/sessions/{sid}/terminal/") as term,
    ):
        first = json.loads(grid.recv(timeout=10))
        assert first["type"] == "grid"
        assert [(r["user"], r["cells"][0]["state"]) for r in first["rows"]] == [("alice", "working")]
        next_event(events, lambda m: m.get("type") == "session", 10)
        assert json.loads(term.recv(timeout=10))["type"] == "hello"

        # A failed check: the cell turns failed with the check's own reason, in both languages.
        assert alice.request("POST", f"/api/sessions/{sid}/check", {"step": 1})[0] == 202
        row, arrived = seat_row(grid, 60, lambda r: r["cells"][0]["state"] == "failed")
        stored = verdict_at(events, 1, False, 10)
        cell = row["cells"][0]
        assert cell["reason"] == {"en": "/root/hello.txt exists: not yet", "zh": "/root/hello.txt exists 还没有"}
        assert cell["attempts"] == 1
        failed_latency = arrived - stored

        # The instructor watches: the learner's page says so; what the learner types is seen.
        with bob.websocket(f"/ws/sessions/{sid}/terminal/") as watch:
            assert json.loads(watch.recv(timeout=10)) == {"type": "hello", "observer": True}
            next_event(events, lambda m: m == {"type": "watchers", "count": 1}, 10)
            term.send(b"echo hi > /root/hello.txt; echo sol$((6*7))ved\r")
            read_until(watch, re.compile(rb"sol42ved"), 20)
            watch.send(b"rm /root/hello.txt\r")  # an observer's keys go nowhere
            # (the prompt's output may still be arriving: skip binary frames to the notice)
            next_event(watch, lambda m: m.get("code") == "read_only", 5)
        next_event(events, lambda m: m == {"type": "watchers", "count": 0}, 10)

        # A pass: step 1 passed, step 2 working; the file the observer "removed" is still there.
        assert alice.request("POST", f"/api/sessions/{sid}/check", {"step": 1})[0] == 202
        row, _ = seat_row(grid, 60, lambda r: r["current_step"] == 2)
        verdict_at(events, 1, True, 10)
        assert [c["state"] for c in row["cells"]] == ["passed", "working"]
        assert row["cells"][0]["reason"] is None
        assert row["cells"][0]["time_s"] is not None

        # A message to the learner reaches their page at once.
        grid.send(json.dumps({"type": "message", "text": "Well done — now step 2", "seat": seat_id}))
        next_event(grid, lambda m: m.get("type") == "sent", 10)
        shown = next_event(events, lambda m: m.get("type") == "message", 10)
        assert shown["message"]["text"] == "Well done — now step 2"

    # The verdict is stored, then pushed; a failed one is pushed at once, a pass after step 2's
    # setup and checkpoint (so its gap includes that guest work, not only the push). The target
    # (250 ms p95) is bench/classes.py's to measure; this bound only a path that polls or waits
    # for a reload misses, even on a machine as loaded as CI's.
    assert 0 <= failed_latency < 2.0, f"a failed verdict took {failed_latency:.3f}s to reach the grid"
    status, _ = alice.request("POST", f"/api/sessions/{sid}/stop")
    assert status == 200
