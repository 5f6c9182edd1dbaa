"""A guest agent that answers from a script instead of a VM: how a replaced or broken agent (the
learner is root in the guest) is played against the host's reply checks, which a real
qemu-guest-agent never fails. libvirt's `qemuAgentCommand` is the one call replaced."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import libvirt_qemu
import pytest

Answers = dict[str, Callable[[dict[str, Any]], str]]


def agent_reply(value: Any) -> str:
    return json.dumps({"return": value})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class ScriptedDomain:
    """What GuestAgent asks of a libvirt domain besides the agent commands."""

    def isActive(self) -> bool:  # libvirt's name
        return True


def script_agent(monkeypatch: pytest.MonkeyPatch) -> Answers:
    """Agent commands are answered by `answers[command](arguments)` (a KeyError for any other)."""
    answers: Answers = {
        "guest-exec": lambda _args: agent_reply({"pid": 42}),
        "guest-file-open": lambda _args: agent_reply(7),
        "guest-file-close": lambda _args: agent_reply({}),
    }

    def command(_domain: object, request: str, _timeout: int, _flags: int) -> str:
        parsed = json.loads(request)
        return answers[parsed["execute"]](parsed.get("arguments", {}))

    monkeypatch.setattr(libvirt_qemu, "qemuAgentCommand", command)
    return answers
