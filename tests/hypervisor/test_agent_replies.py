"""The guest agent's replies are untrusted (the learner is root in the guest): every malformed
reply is refused with GuestAgentMisbehaving, and an agent that never finishes is bounded."""

from __future__ import annotations

import time
from typing import Any

import pytest

from labs.hypervisor import CommandTimeout
from labs.hypervisor.agent_replies import GuestAgentMisbehaving, exec_status, file_chunk, reply_value
from labs.hypervisor.guest_agent import GuestAgent
from tests.scripted_agent import Answers, ScriptedDomain, agent_reply, b64


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (None, "not a JSON text"),
        ("not json", "not JSON"),
        ("[]", "not an object"),
        ('{"error": {}}', "not an object with"),
        ("[" * 100_000, "not JSON"),  # nesting deep enough to exhaust the parser's recursion
    ],
)
def test_a_reply_that_is_not_an_object_with_return_is_refused(reply: Any, why: str) -> None:
    with pytest.raises(GuestAgentMisbehaving, match="guest-ping"):
        reply_value("guest-ping", reply)


@pytest.mark.parametrize(
    "status",
    [
        [],
        {},
        {"exited": "yes"},
        {"exited": 1},
        {"exited": True},  # neither exitcode nor signal
        {"exited": True, "exitcode": "0"},
        {"exited": True, "exitcode": True},
        {"exited": True, "exitcode": 300},
        {"exited": True, "signal": 0},
        {"exited": True, "exitcode": 0, "out-data": 5},
        {"exited": True, "exitcode": 0, "out-data": "***not base64***"},
        {"exited": True, "exitcode": 0, "out-data": b64(b"x" * 101)},  # over the 100-byte cap
        {"exited": True, "exitcode": 0, "err-data": b64(b"x" * 200)},
        {"exited": True, "exitcode": 0, "out-truncated": "no"},
    ],
)
def test_malformed_exec_status_replies_are_refused(status: Any) -> None:
    with pytest.raises(GuestAgentMisbehaving):
        exec_status(status, 100)


def test_a_well_formed_exec_status_is_read() -> None:
    done = exec_status({"exited": True, "exitcode": 3, "out-data": b64(b"out"), "err-data": b64(b"err")}, 100)
    assert (done.exited, done.exit_code, done.stdout, done.stderr, done.truncated) == (True, 3, b"out", b"err", False)
    assert exec_status({"exited": True, "signal": 9}, 100).exit_code == 137
    assert exec_status({"exited": True, "exitcode": 0, "out-truncated": True}, 100).truncated
    assert not exec_status({"exited": False}, 100).exited


@pytest.mark.parametrize(
    "chunk",
    [
        "chunk",
        {"count": 4, "buf-b64": "", "eof": False},  # claims bytes it does not send: once looped forever
        {"count": -1, "buf-b64": "", "eof": True},
        {"count": 10_000_000, "buf-b64": "", "eof": False},
        {"count": 1, "buf-b64": b64(b"x"), "eof": "no"},
        {"count": 1, "buf-b64": 7, "eof": False},
    ],
)
def test_malformed_file_read_replies_are_refused(chunk: Any) -> None:
    with pytest.raises(GuestAgentMisbehaving):
        file_chunk(chunk, 48 * 1024)


def test_an_agent_that_never_finishes_is_bounded_by_the_timeout(
    fake_agent: Answers,
) -> None:
    fake_agent["guest-exec-status"] = lambda _args: agent_reply({"exited": False})
    agent = GuestAgent(ScriptedDomain())
    started = time.monotonic()
    with pytest.raises(CommandTimeout):
        agent.exec("sleep 1000", timeout_s=1, max_output=1024)
    assert time.monotonic() - started < 8  # the timeout, and the (short) kill attempt after it


def test_a_file_read_that_trickles_forever_is_bounded(fake_agent: Answers) -> None:
    fake_agent["guest-file-read"] = lambda _args: agent_reply({"count": 1, "buf-b64": b64(b"x"), "eof": False})
    agent = GuestAgent(ScriptedDomain())
    started = time.monotonic()
    with pytest.raises(GuestAgentMisbehaving, match=r"did not end within 0\.5s"):
        agent.read_file("/dev/zero", timeout_s=0.5)
    assert time.monotonic() - started < 2


def test_a_file_handle_that_is_not_an_integer_is_refused(fake_agent: Answers) -> None:
    fake_agent["guest-file-open"] = lambda _args: agent_reply("7")
    with pytest.raises(GuestAgentMisbehaving, match="expected an integer handle, got str"):
        GuestAgent(ScriptedDomain()).read_file("/etc/hostname")
