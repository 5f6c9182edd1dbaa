"""The control channel: qemu-guest-agent commands through libvirt (virtio-serial port).

Setup and verification commands run here, never on the learner's console, and return exit code
and output separately.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import libvirt
import libvirt_qemu

from .errors import CommandTimeout, GuestAgentTimeout, GuestAgentUnavailable, HypervisorError, translated
from .polling import Deadline, poll

# Seconds libvirt waits for one agent reply; guest-exec itself returns at once (it only spawns).
_REPLY_TIMEOUT_S = 10
_FILE_CHUNK = 48 * 1024
# Stops the process, kills its descendants (found through /proc: busybox images may lack pgrep),
# then kills it. The pid arrives as "$1".
_KILL_TREE = (
    'kill_tree() { kill -STOP "$1" 2>/dev/null; for s in /proc/[0-9]*/stat; do'
    ' read -r p _ _ pp _ < "$s" 2>/dev/null || continue; [ "$pp" = "$1" ] && kill_tree "$p"; done;'
    ' kill -9 "$1" 2>/dev/null; }; kill_tree "$1"'
)


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one command run in the guest."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    duration_s: float

    @property
    def ok(self) -> bool:
        """Whether the command exited 0."""
        return self.exit_code == 0

    @property
    def text(self) -> str:
        """stdout decoded as UTF-8 (invalid bytes replaced)."""
        return self.stdout.decode(errors="replace")


class GuestAgent:
    """qemu-guest-agent of one running domain."""

    def __init__(self, domain: libvirt.virDomain):
        self._domain = domain

    def command(self, execute: str, arguments: dict[str, Any] | None = None, timeout_s: int = _REPLY_TIMEOUT_S) -> Any:
        """Send one agent command and return its "return" value."""
        request: dict[str, Any] = {"execute": execute}
        if arguments is not None:
            request["arguments"] = arguments
        with translated():
            reply = libvirt_qemu.qemuAgentCommand(self._domain, json.dumps(request), timeout_s, 0)
        return json.loads(reply).get("return")

    def wait_ready(self, timeout_s: float = 60.0, poll_s: float = 0.1) -> float:
        """Block until guest-ping answers; return the seconds waited. GuestAgentTimeout otherwise."""
        started = time.monotonic()
        last_error = "no attempt"

        def ping() -> bool:
            nonlocal last_error
            try:
                self.command("guest-ping", timeout_s=2)
                return True
            except GuestAgentUnavailable as exc:
                last_error = str(exc)
            except HypervisorError as exc:
                # Domain not running any more: waiting longer cannot help.
                if not self._domain.isActive():
                    raise GuestAgentUnavailable(f"domain stopped while waiting for the agent: {exc}") from exc
                last_error = str(exc)
            return False

        if not poll(ping, timeout_s=timeout_s, interval_s=poll_s):
            raise GuestAgentTimeout(f"guest agent not ready after {timeout_s}s: {last_error}")
        return time.monotonic() - started

    def exec(
        self,
        command: str | Sequence[str],
        timeout_s: float = 30.0,
        stdin: bytes | None = None,
    ) -> ExecResult:
        """Run `command` in the guest (a string goes through /bin/sh -c) and wait for it.

        Output is captured until the command's stdout/stderr close, so background jobs must
        redirect theirs. On timeout the command's process tree is killed and CommandTimeout raised.
        """
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        arguments: dict[str, Any] = {"path": argv[0], "arg": argv[1:], "capture-output": True}
        if stdin is not None:
            arguments["input-data"] = base64.b64encode(stdin).decode()
        started = time.monotonic()
        deadline = Deadline(timeout_s)
        pid = self.command("guest-exec", arguments)["pid"]
        status: dict[str, Any] = {}

        def exited() -> bool:
            nonlocal status
            status = self.command("guest-exec-status", {"pid": pid})
            return bool(status.get("exited"))

        # Most checks finish in tens of ms; back off so long commands do not spin the agent.
        if not poll(exited, timeout_s=deadline.remaining(), interval_s=0.002, max_interval_s=0.1):
            self._kill(pid)
            out, err = _decode(status, "out-data"), _decode(status, "err-data")
            raise CommandTimeout(f"{argv[0]} did not finish within {timeout_s}s", out, err)
        exit_code = status.get("exitcode")
        if exit_code is None:  # killed by a signal: report it the way a shell would
            exit_code = 128 + int(status.get("signal", 0))
        return ExecResult(
            int(exit_code), _decode(status, "out-data"), _decode(status, "err-data"), time.monotonic() - started
        )

    def _kill(self, pid: int) -> None:
        # qemu-ga 7.2 has no guest-exec-kill. Kill the command's whole process tree (children
        # first) from a second exec; the pid travels as an argument, never inside the script.
        try:
            killer = self.command("guest-exec", {"path": "/bin/sh", "arg": ["-c", _KILL_TREE, "kill-tree", str(pid)]})
            poll(
                lambda: self.command("guest-exec-status", {"pid": killer["pid"]}).get("exited"),
                timeout_s=5,
                interval_s=0.02,
            )
            self.command("guest-exec-status", {"pid": pid})  # reap the status entry in qemu-ga
        except HypervisorError:
            pass

    def read_file(self, path: str, limit: int = 16 * 1024 * 1024) -> bytes:
        """Return the contents of a guest file (at most `limit` bytes)."""
        handle = self.command("guest-file-open", {"path": path, "mode": "r"})
        data = b""
        try:
            while len(data) < limit:
                chunk = self.command("guest-file-read", {"handle": handle, "count": _FILE_CHUNK})
                data += base64.b64decode(chunk.get("buf-b64", ""))
                if chunk.get("eof") or not chunk.get("count"):
                    break
        finally:
            self.command("guest-file-close", {"handle": handle})
        return data[:limit]

    def write_file(self, path: str, data: bytes) -> None:
        """Create or replace a guest file with `data`."""
        handle = self.command("guest-file-open", {"path": path, "mode": "w"})
        try:
            for offset in range(0, len(data), _FILE_CHUNK):
                piece = base64.b64encode(data[offset : offset + _FILE_CHUNK]).decode()
                self.command("guest-file-write", {"handle": handle, "buf-b64": piece})
            self.command("guest-file-flush", {"handle": handle})
        finally:
            self.command("guest-file-close", {"handle": handle})


def _decode(status: dict[str, Any], key: str) -> bytes:
    value = status.get(key)
    return base64.b64decode(value) if value else b""
