"""The warm pool on a real host agent: a pre-booted VM is handed out, reset, and replaced."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import services

pytestmark = [pytest.mark.vm, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.LabStack]:
    with services.lab_stack(tmp_path_factory.mktemp("pool"), LABS_POOL_SIZES="tiny=1") as running:
        yield running


def pool_rows(stack: services.LabStack) -> list[tuple[str, str, str | None]]:
    db = Path(stack.env["DATABASE_URL"].removeprefix("sqlite:///"))
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT id, state, session_id FROM labs_poolvm ORDER BY created_at"))


def test_start_takes_the_warm_vm_and_the_pool_refills(stack: services.LabStack) -> None:
    services.wait_for(lambda: any(state == "ready" for _, state, _ in pool_rows(stack)), 120, "a warm VM")
    warm_id = next(pool_id for pool_id, state, _ in pool_rows(stack) if state == "ready")
    alice = stack.client("alice")
    started = time.monotonic()
    _status, session = alice.request("POST", "/api/sessions", {"lab": stack.slug})
    sid = session["id"]
    services.wait_for_state(alice, sid, {"ready"}, 60)
    elapsed = time.monotonic() - started
    assert (warm_id, "assigned", sid) in pool_rows(stack)
    assert not services.domain_exists(sid)  # no new VM: the warm one carries the session
    with alice.websocket(f"/ws/sessions/{sid}/terminal/") as term:
        assert json.loads(term.recv(timeout=10))["type"] == "hello"
        term.send(b"echo warm-$((2*21))\r")
        buffer = b""
        while not re.search(rb"warm-42", buffer):
            frame = term.recv(timeout=20)
            buffer += frame if isinstance(frame, bytes) else b""
    # Another warm VM boots once the hand-out is done; stopping destroys the handed-out one.
    services.wait_for(lambda: any(s == "ready" and p != warm_id for p, s, _ in pool_rows(stack)), 120, "a refill")
    alice.request("POST", f"/api/sessions/{sid}/stop")
    services.wait_for(lambda: not services.domain_exists(warm_id), 60, "the handed-out VM to be destroyed")
    assert elapsed < 60
