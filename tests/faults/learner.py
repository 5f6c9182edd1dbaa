"""What a learner does and sees during a fault: websockets that reconnect as the page does, the
session's events, and a terminal whose scrollback and console are checked."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any

from tests import lab_stack
from tests.lab_stack import read_until


def open_ws(client: lab_stack.LabClient, path: str) -> Any:
    """An open websocket (entered, as websockets wants; the caller closes it)."""
    return client.websocket(path).__enter__()


def connect(client: lab_stack.LabClient, path: str, timeout: float = 30) -> tuple[Any, dict[str, Any]]:
    """Open a websocket and read its first message, retrying (as the page does) while the web tier
    or Redis comes back: (websocket, first message)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ws = open_ws(client, path)
            first = json.loads(ws.recv(timeout=10))
            if first.get("type") != "error":
                return ws, dict(first)
            ws.close()  # "unavailable, retrying": the page reconnects, and so do we
            problem: Exception = ConnectionError(f"{path}: {first}")
        except Exception as exc:
            problem = exc
        if time.monotonic() > deadline:
            raise problem
        time.sleep(0.5)


def open_events(client: lab_stack.LabClient, session_id: str, timeout: float = 30) -> tuple[Any, dict[str, Any]]:
    """The session's events websocket and the session as it first shows it."""
    events, first = connect(client, f"/ws/sessions/{session_id}/events/", timeout)
    assert first["type"] == "session", first
    return events, dict(first["session"])


def open_terminal(client: lab_stack.LabClient, session_id: str, timeout: float = 30) -> tuple[Any, bytes]:
    """Connect the terminal: (websocket, its scrollback)."""
    term, hello = connect(client, f"/ws/sessions/{session_id}/terminal/", timeout)
    assert hello["type"] == "hello", hello
    scrollback = b""
    with contextlib.suppress(TimeoutError):
        frame = term.recv(timeout=2)
        scrollback = frame if isinstance(frame, bytes) else b""
    return term, scrollback


def type_marker(client: lab_stack.LabClient, session_id: str, marker: str, command: str = "true") -> None:
    """Type `command` and an echo of `marker` in the terminal and wait for the echo's output."""
    term, _ = open_terminal(client, session_id)
    with term:
        term.send(f"{command}; echo {marker}-$((6*7))\r".encode())
        read_until(term, re.compile(f"{marker}-42".encode()), 30)


def terminal_recovered(client: lab_stack.LabClient, session_id: str, marker: str | None, timeout: float = 60) -> None:
    """The terminal reconnects, its scrollback still holds `marker` (if given), and the console answers."""
    term, scrollback = open_terminal(client, session_id, timeout)
    with term:
        if marker is not None:
            assert f"{marker}-42".encode() in scrollback, f"scrollback lost {marker}: {scrollback[-300:]!r}"
        deadline = time.monotonic() + timeout
        probe = f"probe-{os.urandom(2).hex()}"
        while True:  # the relay may still be re-attaching the console: type again until it answers
            term.send(f"echo {probe}-$((6*7))\r".encode())
            try:
                read_until(term, re.compile(f"{probe}-42".encode()), 3)
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise


def session_state(state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("type") == "session" and m["session"]["state"] == state
