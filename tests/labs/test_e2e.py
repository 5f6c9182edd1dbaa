"""End to end over HTTP and websockets: a real ASGI server, a real host agent worker, real VMs."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from labs.host.console_relay import CONSOLE_TTY
from labs.hypervisor import Hypervisor
from tests import lab_stack, servers
from tests.lab_stack import next_event, read_until

pytestmark = [pytest.mark.vm, pytest.mark.slow]
PROMPT = re.compile(rb"root@virtlab:[^\r\n]*# ")
VM_ID = "from labs.models import LabSession; print(LabSession.objects.get(pk={sid!r}).vm_id)"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab_stack.LabStack]:
    with lab_stack.lab_stack(tmp_path_factory.mktemp("labstack"), LABS_TTL_S="600") as running:
        yield running


def session_state(state: str) -> Any:
    return lambda m: m.get("type") == "session" and m["session"]["state"] == state


def wait_for_tty_size(term: Any, size: bytes, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        term.send(b"echo tty-$(stty size | tr ' ' x)\r")
        try:
            read_until(term, re.compile(rb"tty-" + size.replace(b" ", b"x")), 2)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def test_start_work_check_reset_stop(stack: lab_stack.LabStack) -> None:
    alice = stack.client("alice")
    status, session = alice.request("POST", "/api/sessions", {"lab": stack.slug})
    assert status == 201, session
    sid = session["id"]
    with alice.websocket(f"/ws/sessions/{sid}/events/") as events:
        first = json.loads(events.recv(timeout=10))
        assert first["type"] == "session"
        assert first["session"]["id"] == sid
        # Typed while the VM boots: held back until step 1's checkpoint exists, then typed.
        with alice.websocket(f"/ws/sessions/{sid}/terminal/") as early:
            assert json.loads(early.recv(timeout=10))["type"] == "hello"
            early.send(b"echo early > /root/early.txt\r")
        progress = next_event(events, lambda m: m.get("type") == "progress", 60)
        assert progress["stage"] in {"boot", "warm", "agent"}
        next_event(events, session_state("ready"), 120)

        with alice.websocket(f"/ws/sessions/{sid}/terminal/") as term:
            assert json.loads(term.recv(timeout=10))["type"] == "hello"
            term.send(b"echo relay-$((40+2)) EARLY-$(cat /root/early.txt)\r")
            read_until(term, re.compile(rb"relay-42 EARLY-early"), 20)
            # The page's size reaches the guest's tty (set over the control channel, asynchronously).
            term.send(json.dumps({"type": "resize", "cols": 101, "rows": 37}))
            wait_for_tty_size(term, b"37 101")

            # Check before solving: a clear "not yet" for step 1.
            assert alice.request("POST", f"/api/sessions/{sid}/check", {"step": 1})[0] == 202
            failed = next_event(events, lambda m: m.get("type") == "session" and "1" in m["session"]["results"], 60)
            assert failed["session"]["results"]["1"]["passed"] is False
            assert "not yet" in failed["session"]["results"]["1"]["details"][0]["en"]

            # Solve it in the terminal, as a learner would, then pass.
            term.send("echo hi > /root/hello.txt; echo 你好\r".encode())
            read_until(term, re.compile("你好".encode()), 20)
            alice.request("POST", f"/api/sessions/{sid}/check", {"step": 1})
            passed = next_event(events, lambda m: m.get("type") == "session" and m["session"]["current_step"] == 2, 60)
            assert passed["session"]["results"]["1"]["passed"] is True
            assert passed["session"]["checkpoints"] == [1, 2]

            # Reset: back to step 1's checkpoint; the file made afterwards is gone.
            assert alice.request("POST", f"/api/sessions/{sid}/reset")[0] == 202
            next_event(events, session_state("ready"), 60)
        status, body = alice.request("GET", f"/api/sessions/{sid}")
        assert body["current_step"] == 1
        assert body["results"] == {}

        with alice.websocket(f"/ws/sessions/{sid}/terminal/") as term:
            term.recv(timeout=10)
            # Both files came after step 1's checkpoint, the early one too.
            term.send(b"[ -e /root/hello.txt ] || [ -e /root/early.txt ] || echo MISSING-$((1+1))\r")
            read_until(term, re.compile(rb"MISSING-2"), 30)
            # The checkpoint predates the resize: the relay set the size again after the revert.
            wait_for_tty_size(term, b"37 101")
            # On a loaded host that may run before the revert is complete, which then brings the
            # snapshot's size back: so the finished revert asks for the size again.
            vm_id = stack.shell(VM_ID.format(sid=sid)).split()[-1]
            with Hypervisor.connect() as hv:  # what the snapshot's late load does to the tty
                assert hv.vm(vm_id).exec(["stty", "-F", CONSOLE_TTY, "cols", "20", "rows", "10"]).ok
            wait_for_tty_size(term, b"10 20")
            stack.shell(f"from labs.host import console_relay; console_relay.size_again({sid!r})")
            wait_for_tty_size(term, b"37 101")

            assert alice.request("POST", f"/api/sessions/{sid}/stop")[0] == 200
            gone = next_event(term, lambda m: m.get("type") == "gone", 20)
            assert gone["reason"]
        next_event(events, session_state("destroyed"), 60)


def test_expired_session_is_torn_down_and_the_terminal_told(stack: lab_stack.LabStack) -> None:
    bob = stack.client("bob")
    status, session = bob.request("POST", "/api/sessions", {"lab": stack.slug})
    assert status == 201
    sid = session["id"]
    ready = lab_stack.wait_for_state(bob, sid, {"ready"}, 120)
    assert ready["expires_at"]
    with bob.websocket(f"/ws/sessions/{sid}/terminal/") as term:
        assert json.loads(term.recv(timeout=10))["type"] == "hello"
        # The clock runs out (moved, not waited for), then the periodic reconciler runs.
        stack.shell(
            "from labs.models import LabSession; from django.utils import timezone; from datetime import timedelta;"
            f"LabSession.objects.filter(pk='{sid}').update(expires_at=timezone.now() - timedelta(seconds=1))"
        )
        stack.shell("from labs.tasks import reconcile_all; reconcile_all.apply_async(queue='web')")
        gone = next_event(term, lambda m: m.get("type") == "gone", 30)
        assert gone["reason"] == "Expired"
    lab_stack.wait_for_state(bob, sid, {"destroyed"}, 60)
    servers.wait_for(lambda: not lab_stack.domain_exists(sid), 60, "the expired VM to be destroyed")


def test_going_back_to_a_later_step_restores_its_checkpoint(stack: lab_stack.LabStack) -> None:
    carol = stack.client("alice")  # her first lab was stopped above
    status, session = carol.request("POST", "/api/sessions", {"lab": stack.slug})
    assert status == 201, session
    sid = session["id"]
    lab_stack.wait_for_state(carol, sid, {"ready"}, 180)
    with carol.websocket(f"/ws/sessions/{sid}/events/") as events:
        json.loads(events.recv(timeout=10))
        with carol.websocket(f"/ws/sessions/{sid}/terminal/") as term:
            term.recv(timeout=10)
            term.send(b"echo hi > /root/hello.txt; echo DONE-$((2+3))\r")
            read_until(term, re.compile(rb"DONE-5"), 30)
            carol.request("POST", f"/api/sessions/{sid}/check", {"step": 1})
            passed = next_event(events, lambda m: m.get("type") == "session" and m["session"]["current_step"] == 2, 90)
            assert passed["session"]["checkpoints"] == [1, 2]
            # Work done during step 2 that going back to step 2's start must undo.
            term.send(b"echo later > /root/later.txt; echo DONE-$((3+4))\r")
            read_until(term, re.compile(rb"DONE-7"), 30)
        assert carol.request("POST", f"/api/sessions/{sid}/goto", {"step": 2})[0] == 202
        next_event(events, session_state("ready"), 90)
    status, body = carol.request("GET", f"/api/sessions/{sid}")
    assert body["current_step"] == 2
    assert body["results"]["1"]["passed"] is True  # step 1's pass is kept
    with carol.websocket(f"/ws/sessions/{sid}/terminal/") as term:
        term.recv(timeout=10)
        term.send(b"cat /root/hello.txt; ls /root/later.txt || echo GONE-$((4+4))\r")
        out = read_until(term, re.compile(rb"GONE-8"), 30)
        assert b"hi" in out  # made in step 1: kept by step 2's checkpoint
    assert carol.request("POST", f"/api/sessions/{sid}/stop")[0] == 200
    lab_stack.wait_for_state(carol, sid, {"destroyed"}, 90)
