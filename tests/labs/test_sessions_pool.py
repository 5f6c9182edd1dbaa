"""The warm pool on a real host agent: prepared and generic pre-booted VMs are handed out and replaced."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import lab_stack, servers

pytestmark = [pytest.mark.vm, pytest.mark.slow]
OTHER_LAB = "relay-other"  # the same profile, nothing prepared for it
PoolRow = tuple[str, str, str, str | None]  # id, lab_slug, state, session id


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab_stack.LabStack]:
    # One VM prepared for the test lab, one for any lab of its profile.
    pool = f"tiny=1,lab:{lab_stack.LAB_SLUG}=1"
    with lab_stack.lab_stack(tmp_path_factory.mktemp("pool"), LABS_POOL_SIZES=pool) as running:
        lab_stack.write_test_lab(Path(running.env["VIRTLAB_CONTENT_DIR"]), OTHER_LAB)
        yield running


def pool_rows(stack: lab_stack.LabStack) -> list[PoolRow]:
    db = Path(stack.env["DATABASE_URL"].removeprefix("sqlite:///"))
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT id, lab_slug, state, session_id FROM labs_poolvm ORDER BY created_at"))


def ready_vm(stack: lab_stack.LabStack, lab_slug: str) -> str:
    def find() -> str | None:
        return next((row[0] for row in pool_rows(stack) if row[1] == lab_slug and row[2] == "ready"), None)

    servers.wait_for(lambda: find() is not None, 180, f"a warm VM for {lab_slug or 'any lab'}")
    return str(find())


def start_and_type(client: lab_stack.LabClient, slug: str) -> tuple[str, bytes]:
    """Start a lab; (session id, terminal output after printing how often step 1 was set up)."""
    _status, session = client.request("POST", "/api/sessions", {"lab": slug})
    sid = session["id"]
    lab_stack.wait_for_state(client, sid, {"ready"}, 60)
    checkpointed = lambda: client.request("GET", f"/api/sessions/{sid}")[1]["checkpoints"] == [1]  # noqa: E731
    servers.wait_for(checkpointed, 30, "step 1's checkpoint")
    with client.websocket(f"/ws/sessions/{sid}/terminal/") as term:
        assert json.loads(term.recv(timeout=10))["type"] == "hello"
        term.send(b"echo setups-$(grep -c set-up /tmp/setup.log)-done\r")
        buffer = b""
        while not re.search(rb"setups-\d+-done", buffer):
            frame = term.recv(timeout=20)
            buffer += frame if isinstance(frame, bytes) else b""
    return sid, buffer


def test_prepared_vm_first_then_a_generic_one_then_both_refill(stack: lab_stack.LabStack) -> None:
    prepared, generic = ready_vm(stack, lab_stack.LAB_SLUG), ready_vm(stack, "")
    # Prepared while idle: step 1 is set up before any learner asks. Its step-1 checkpoint is the
    # lab's template it was cloned from (a reset clones it again): no snapshot of its own.
    assert lab_stack.snapshots_of(prepared) == []
    assert lab_stack.snapshots_of(generic) == []

    alice_sid, alice_out = start_and_type(stack.client("alice"), stack.slug)
    assert (prepared, lab_stack.LAB_SLUG, "assigned", alice_sid) in pool_rows(stack)
    assert not lab_stack.domain_exists(alice_sid)  # no new VM: the warm one carries the session
    assert b"setups-1-done" in alice_out  # setup ran once, in advance, not again at hand-out

    # A learner of a lab nothing is prepared for gets the generic VM (a learner of the first lab
    # may get its refill, a clone that can be ready in seconds): never used, so no reset; step 1 is
    # set up on hand-out.
    bob_sid, bob_out = start_and_type(stack.client("bob"), OTHER_LAB)
    assert (generic, "", "assigned", bob_sid) in pool_rows(stack)
    assert b"setups-1-done" in bob_out
    assert lab_stack.snapshots_of(generic) == ["step-1"]

    # Both kinds boot again once the hand-outs are done; stopping destroys the handed-out VMs.
    servers.wait_for(
        lambda: {row[1] for row in pool_rows(stack) if row[2] == "ready"} == {"", lab_stack.LAB_SLUG}, 240, "refills"
    )
    for client, sid, vm in ((stack.client("alice"), alice_sid, prepared), (stack.client("bob"), bob_sid, generic)):
        client.request("POST", f"/api/sessions/{sid}/stop")

        def destroyed(vm_id: str = vm) -> bool:
            return not lab_stack.domain_exists(vm_id)

        servers.wait_for(destroyed, 60, "the handed-out VM to be destroyed")
