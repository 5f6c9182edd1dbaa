"""The control channel: qemu-guest-agent commands through libvirt (virtio-serial port).

Setup and verification commands run here, never on the learner's console, and return exit code
and output separately. The agent is untrusted input: the learner is root in the guest and may
replace it. Every reply is checked for shape, types and size before use (agent_replies.py:
GuestAgentMisbehaving otherwise), every wait has a deadline, and `exec(max_output=...)` cuts a
command's output inside the guest, so a flood of output cannot break libvirt's connection to the
agent.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import libvirt
import libvirt_qemu

from .agent_replies import (
    ExecStatus,
    GuestAgentMisbehaving,
    exec_pid,
    exec_status,
    file_chunk,
    file_handle,
    reply_value,
)
from .errors import (
    CommandTimeout,
    GuestAgentTimeout,
    GuestAgentUnavailable,
    HostUnreachable,
    HypervisorError,
    translated,
)
from .polling import Deadline, poll

log = logging.getLogger(__name__)

# Seconds libvirt waits for one agent reply; guest-exec itself returns at once (it only spawns).
_REPLY_TIMEOUT_S = 10
_KILL_TIMEOUT_S = 3  # each agent call while killing a timed-out command
_FILE_CHUNK = 48 * 1024
# qemu-ga keeps at most 16 MiB of each output stream; a reply claiming more is not qemu-ga's.
AGENT_OUTPUT_MAX = 16 * 1024 * 1024
# libvirt itself drops the agent connection on a reply over 10 MiB ("No complete agent response"),
# and its RPC refuses to carry one whose base64 output passes ~4 MiB ("Unable to encode message
# payload"): `exec(max_output=...)` keeps both streams well below that.
EXEC_OUTPUT_LIMIT_MAX = 1536 * 1024
_TOO_LARGE = ("encode message payload", "No complete agent response")
# Stops the process, kills its descendants (found through /proc: busybox images may lack pgrep),
# then kills it. The pid arrives as "$1".
_KILL_TREE = (
    'kill_tree() { kill -STOP "$1" 2>/dev/null; for s in /proc/[0-9]*/stat; do'
    ' read -r p _ _ pp _ < "$s" 2>/dev/null || continue; [ "$pp" = "$1" ] && kill_tree "$p"; done;'
    ' kill -9 "$1" 2>/dev/null; }; kill_tree "$1"'
)
# Checks' commands: stdout and stderr go to two files on a small tmpfs of their own in the guest
# (mounted by the first check): a command that writes more than it holds gets ENOSPC, and the
# host reads back at most the cap. One shell that evals (or execs) the command, no fork after the
# first check: the pipes through two `head`s below cost four forks and two execs, 0.3-0.4 s a
# check command under TCG (measured: 0.5-0.85 s, against 0.13-0.23 s uncapped). Not `ulimit -f`:
# it would also stop a check's own `qemu-img convert` at the cap.
# One pair per guest: a session runs one check at a time, each check's commands one after another.
_CHECK_DIR = "/run/virtlab-check"
_OUT_FILE, _ERR_FILE = f"{_CHECK_DIR}/out", f"{_CHECK_DIR}/err"
_CHECK_DIR_MOUNT = (
    f"[ -d {_CHECK_DIR} ] || {{ mkdir -p -m 0700 {_CHECK_DIR} &&"
    f" mount -t tmpfs -o size=4m,mode=0700 virtlab-check {_CHECK_DIR}; }} 2>/dev/null; "
)
# Shell text is eval'ed (fd 3, the wrapper's own stdout, closed for it); after it, builtins only
# (`[ -s ]`, echo: no fork) tell which files hold anything, so the host reads only those: each read
# is three agent round trips, ~0.2 s of a check under load. A command that exits the shell itself
# leaves no such line, and both files are read.
_TO_FILES_SHELL = _CHECK_DIR_MOUNT + (
    'exec 3>&1 >"$1" 2>"$2" && _vl_c=$3 && shift 3 && { eval "unset _vl_c; $_vl_c" 3>&-; _vl_s=$?; _vl_f=;'
    f' [ -s {_OUT_FILE} ] && _vl_f=o; [ -s {_ERR_FILE} ] && _vl_f=${{_vl_f}}e; echo "vl:$_vl_f" >&3; exit $_vl_s; }}'
)
_TO_FILES_ARGV = _CHECK_DIR_MOUNT + 'exec >"$1" 2>"$2" && shift 2 && exec "$@"'
_WRITTEN = {b"vl:\n": (False, False), b"vl:o\n": (True, False), b"vl:e\n": (False, True), b"vl:oe\n": (True, True)}
# What the wrapper itself may print (its error when the redirect fails); the command's own output
# goes to the files, never to qemu-ga's capture.
_WRAPPER_OUTPUT_MAX = 4096
# The fallback when those files cannot be written (the learner is root in the guest): shell text
# "$2" with its stdout and stderr each cut at "$1" bytes by `head`; a command that writes more is
# stopped by SIGPIPE. pipefail passes the command's exit status through the two pipes; the command
# itself runs without it, as under a plain `sh -c`.
_CAPPED_SHELL = (
    'set -o pipefail; _vl_n=$1; _vl_c=$2; shift 2; { { set +o pipefail; eval "unset _vl_n _vl_c; $_vl_c"; }'
    ' 2>&1 1>&3 3>&- | head -c "$_vl_n" >&2; } 3>&1 | head -c "$_vl_n"'
)
# The same for an argument vector ("$2" onwards).
_CAPPED_ARGV = (
    'set -o pipefail; _vl_n=$1; shift; { "$@" 2>&1 1>&3 3>&- | head -c "$_vl_n" >&2; } 3>&1 | head -c "$_vl_n"'
)


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one command run in the guest."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    duration_s: float
    truncated: bool = False  # stdout or stderr was longer than the cap and was cut

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
        """Send one agent command and return its "return" value.

        GuestAgentMisbehaving when the reply is not a JSON object with a "return" member, or is
        larger than libvirt can carry.
        """
        request: dict[str, Any] = {"execute": execute}
        if arguments is not None:
            request["arguments"] = arguments
        try:
            with translated():
                reply = libvirt_qemu.qemuAgentCommand(self._domain, json.dumps(request), timeout_s, 0)
        except HypervisorError as exc:
            # libvirt reports a reply too large to carry as an RPC error: the guest's doing, not the host's.
            if type(exc) in (HostUnreachable, HypervisorError) and any(s in str(exc) for s in _TOO_LARGE):
                raise GuestAgentMisbehaving(f"{execute}: the agent's reply is too large: {exc}") from exc
            raise
        return reply_value(execute, reply)

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
        max_output: int | None = None,
    ) -> ExecResult:
        """Run `command` in the guest (a string goes through /bin/sh -c) and wait for it.

        Output is captured until the command's stdout/stderr close, so background jobs must
        redirect theirs. On timeout the command's process tree is killed and CommandTimeout raised.
        With `max_output` (at most EXEC_OUTPUT_LIMIT_MAX), each of stdout and stderr is cut at that
        many bytes inside the guest (a command writing more is stopped by SIGPIPE) and the result
        says `truncated`. The whole call returns within about `timeout_s` plus 10 s, whatever the
        agent does; a malformed reply raises GuestAgentMisbehaving.
        """
        if max_output is not None and not 0 < max_output <= EXEC_OUTPUT_LIMIT_MAX:
            raise ValueError(f"max_output must be within 1..{EXEC_OUTPUT_LIMIT_MAX}")
        started = time.monotonic()
        deadline = Deadline(timeout_s)
        if max_output is None:
            status = self._run(_argv(command, None), deadline, stdin, AGENT_OUTPUT_MAX)
            return ExecResult(
                status.exit_code, status.stdout, status.stderr, time.monotonic() - started, status.truncated
            )
        to_files = self._run(_to_files_argv(command), deadline, stdin, _WRAPPER_OUTPUT_MAX)
        # Anything else on the wrapper's streams is its own complaint, from before its redirect.
        written = _WRITTEN.get(to_files.stdout) if not to_files.stderr else None
        if written is not None or not (to_files.stdout or to_files.stderr):
            # One read each: the whole cap fits in one reply (EXEC_OUTPUT_LIMIT_MAX is chosen so).
            out, err = (
                self.read_file(path, max_output + 1, max(1.0, deadline.remaining()), chunk=max_output + 1)
                if written is None or wrote
                else b""
                for path, wrote in zip((_OUT_FILE, _ERR_FILE), written or (True, True), strict=True)
            )
            exit_code, cut = to_files.exit_code, False
        else:
            # The guest's /run is not writable (its root's doing): cut through pipes instead.
            log.info("guest %s: %s", self._domain.name(), to_files.stderr[:200].decode(errors="replace"))
            piped = self._run(_argv(command, max_output), deadline, stdin, max_output + 1)
            out, err, exit_code, cut = piped.stdout, piped.stderr, piped.exit_code, piped.truncated
        cut = cut or len(out) > max_output or len(err) > max_output
        return ExecResult(exit_code, out[:max_output], err[:max_output], time.monotonic() - started, truncated=cut)

    def _run(self, argv: list[str], deadline: Deadline, stdin: bytes | None, stream_max: int) -> ExecStatus:
        """guest-exec `argv` and wait for it to exit (CommandTimeout past the deadline, its process
        tree killed); qemu-ga's captured output may hold at most `stream_max` bytes a stream."""
        arguments: dict[str, Any] = {"path": argv[0], "arg": argv[1:], "capture-output": True}
        if stdin is not None:
            arguments["input-data"] = base64.b64encode(stdin).decode()
        pid = exec_pid(self.command("guest-exec", arguments))
        status = ExecStatus(exited=False)

        def exited() -> bool:
            nonlocal status
            reply = self.command("guest-exec-status", {"pid": pid}, timeout_s=_reply_timeout(deadline))
            status = exec_status(reply, stream_max)
            return status.exited

        # Most checks finish in tens of ms; back off so long commands do not spin the agent.
        if not poll(exited, timeout_s=deadline.remaining(), interval_s=0.002, max_interval_s=0.1):
            self._kill(pid)
            raise CommandTimeout(
                f"{argv[0]} did not finish within {deadline.timeout_s:g}s", status.stdout, status.stderr
            )
        return status

    def _kill(self, pid: int) -> None:
        # qemu-ga 7.2 has no guest-exec-kill. Kill the command's whole process tree (children
        # first) from a second exec; the pid travels as an argument, never inside the script.
        # Every call is short: a misbehaving agent must not stretch the caller's deadline.
        try:
            arguments = {"path": "/bin/sh", "arg": ["-c", _KILL_TREE, "kill-tree", str(pid)]}
            killer = exec_pid(self.command("guest-exec", arguments, timeout_s=_KILL_TIMEOUT_S))
            poll(
                lambda: (
                    exec_status(
                        self.command("guest-exec-status", {"pid": killer}, timeout_s=_KILL_TIMEOUT_S), AGENT_OUTPUT_MAX
                    ).exited
                ),
                timeout_s=5,
                interval_s=0.02,
            )
            # Reap the status entry in qemu-ga.
            self.command("guest-exec-status", {"pid": pid}, timeout_s=_KILL_TIMEOUT_S)
        except HypervisorError:
            pass

    def read_file(
        self, path: str, limit: int = 16 * 1024 * 1024, timeout_s: float = 60.0, chunk: int = _FILE_CHUNK
    ) -> bytes:
        """Return the contents of a guest file (at most `limit` bytes).

        GuestAgentMisbehaving on a malformed reply, or when the read has not ended after `timeout_s`.
        """
        deadline = Deadline(timeout_s)
        handle = file_handle(self.command("guest-file-open", {"path": path, "mode": "r"}))
        chunks: list[bytes] = []
        size = 0
        try:
            while size < limit:
                if deadline.expired():
                    raise GuestAgentMisbehaving(f"reading {path} did not end within {timeout_s:g}s")
                reply = self.command(
                    "guest-file-read", {"handle": handle, "count": chunk}, timeout_s=_reply_timeout(deadline)
                )
                data, eof = file_chunk(reply, chunk)
                chunks.append(data)
                size += len(data)
                if eof or not data:
                    break
        finally:
            # A failure above (the VM gone, a bad reply) is what the caller must see, not this one's.
            with contextlib.suppress(HypervisorError):
                self.command("guest-file-close", {"handle": handle}, timeout_s=_KILL_TIMEOUT_S)
        return b"".join(chunks)[:limit]

    def write_file(self, path: str, data: bytes) -> None:
        """Create or replace a guest file with `data`."""
        handle = file_handle(self.command("guest-file-open", {"path": path, "mode": "w"}))
        try:
            for offset in range(0, len(data), _FILE_CHUNK):
                piece = base64.b64encode(data[offset : offset + _FILE_CHUNK]).decode()
                self.command("guest-file-write", {"handle": handle, "buf-b64": piece})
            self.command("guest-file-flush", {"handle": handle})
        finally:
            self.command("guest-file-close", {"handle": handle})


def _argv(command: str | Sequence[str], max_output: int | None) -> list[str]:
    if max_output is None:
        return ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
    if isinstance(command, str):
        return ["/bin/sh", "-c", _CAPPED_SHELL, "capped", str(max_output + 1), command]
    return ["/bin/sh", "-c", _CAPPED_ARGV, "capped", str(max_output + 1), *command]


def _to_files_argv(command: str | Sequence[str]) -> list[str]:
    if isinstance(command, str):
        return ["/bin/sh", "-c", _TO_FILES_SHELL, "capped", _OUT_FILE, _ERR_FILE, command]
    return ["/bin/sh", "-c", _TO_FILES_ARGV, "capped", _OUT_FILE, _ERR_FILE, *command]


def _reply_timeout(deadline: Deadline) -> int:
    """Seconds libvirt may wait for one reply: what is left of the deadline, 1..10 s."""
    return max(1, min(_REPLY_TIMEOUT_S, math.ceil(deadline.remaining())))
