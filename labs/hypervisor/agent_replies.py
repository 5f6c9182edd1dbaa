"""What the guest agent answers, checked before use: it is untrusted input (the learner is root in
the guest and may replace qemu-guest-agent). Each reply's shape, types and size are validated;
anything else raises GuestAgentMisbehaving, which fails the check, never the session.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any, TypeGuard

from .errors import HypervisorError

# A raw reply longer than this is refused unparsed (libvirt itself drops the agent connection on
# a reply over 10 MiB).
REPLY_CHARS_MAX = 12 * 1024 * 1024


class GuestAgentMisbehaving(HypervisorError):
    """The guest agent answered, but not as qemu-guest-agent does: a reply of the wrong shape or
    size, or a file read that never ends. The guest (whose root may have replaced the agent) is at
    fault, not the host: a check fails on it, the session does not."""


@dataclass(frozen=True)
class ExecStatus:
    """A validated guest-exec-status reply."""

    exited: bool
    exit_code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""
    truncated: bool = False


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def reply_value(execute: str, reply: object) -> Any:
    """The "return" member of a raw agent reply (a JSON text); GuestAgentMisbehaving otherwise."""
    if not isinstance(reply, str):
        raise GuestAgentMisbehaving(f"{execute}: expected a JSON text, got {_kind(reply)}")
    if len(reply) > REPLY_CHARS_MAX:
        raise GuestAgentMisbehaving(f"{execute}: the reply is larger than {REPLY_CHARS_MAX} characters")
    try:
        document = json.loads(reply)
    except (ValueError, RecursionError) as exc:
        raise GuestAgentMisbehaving(f"{execute}: the reply is not JSON") from exc
    if not isinstance(document, dict) or "return" not in document:
        raise GuestAgentMisbehaving(f'{execute}: the reply is not an object with "return"')
    return document["return"]


def file_handle(value: object) -> int:
    """A guest-file-open reply: an integer handle."""
    if not _is_int(value):
        raise GuestAgentMisbehaving(f"guest-file-open: expected an integer handle, got {_kind(value)}")
    return value


def exec_pid(value: object) -> int:
    if not isinstance(value, dict) or not _is_int(value.get("pid")) or value["pid"] < 0:
        raise GuestAgentMisbehaving(f'guest-exec: expected {{"pid": <integer>}}, got {_kind(value)}')
    return int(value["pid"])


def exec_status(value: object, stream_max: int) -> ExecStatus:
    """A guest-exec-status reply, checked: `exited` a boolean; once exited, `exitcode` (0..255) or
    `signal` (1..127); `out-data`/`err-data` base64 of at most `stream_max` bytes each."""
    what = "guest-exec-status"
    if not isinstance(value, dict):
        raise GuestAgentMisbehaving(f"{what}: expected an object, got {_kind(value)}")
    exited = value.get("exited")
    if not isinstance(exited, bool):
        raise GuestAgentMisbehaving(f'{what}: "exited" is {_kind(exited)}, not a boolean')
    stdout, out_cut = _stream(value, "out", stream_max)
    stderr, err_cut = _stream(value, "err", stream_max)
    if not exited:
        return ExecStatus(False, stdout=stdout, stderr=stderr)
    code, signal = value.get("exitcode"), value.get("signal")
    if code is not None:
        if not _is_int(code) or not 0 <= code <= 255:
            raise GuestAgentMisbehaving(f'{what}: "exitcode" is not an integer within 0..255')
        exit_code = int(code)
    elif signal is not None:
        if not _is_int(signal) or not 0 < signal < 128:
            raise GuestAgentMisbehaving(f'{what}: "signal" is not an integer within 1..127')
        exit_code = 128 + int(signal)  # killed by a signal: report it the way a shell would
    else:
        raise GuestAgentMisbehaving(f'{what}: an exited command has neither "exitcode" nor "signal"')
    return ExecStatus(True, exit_code, stdout, stderr, out_cut or err_cut)


def _stream(status: dict[str, Any], name: str, stream_max: int) -> tuple[bytes, bool]:
    """(bytes, qemu-ga cut it) of `out`/`err` in a guest-exec-status reply."""
    data, cut = status.get(f"{name}-data", ""), status.get(f"{name}-truncated", False)
    if not isinstance(data, str) or not isinstance(cut, bool):
        raise GuestAgentMisbehaving(f'guest-exec-status: "{name}-data" or "{name}-truncated" has the wrong type')
    # Checked before decoding too (base64 of n bytes is 4 * ceil(n / 3) characters).
    too_long = GuestAgentMisbehaving(f'guest-exec-status: "{name}-data" holds more than {stream_max} bytes')
    if len(data) > 4 * math.ceil(stream_max / 3):
        raise too_long
    decoded = _b64(data, f"{name}-data")
    if len(decoded) > stream_max:
        raise too_long
    return decoded, cut


def file_chunk(value: object, requested: int) -> tuple[bytes, bool]:
    """(data, eof) of a guest-file-read reply, checked: `count` (0..requested) equals the length
    of the decoded `buf-b64`, and `eof` is a boolean."""
    what = "guest-file-read"
    if not isinstance(value, dict):
        raise GuestAgentMisbehaving(f"{what}: expected an object, got {_kind(value)}")
    count, buf, eof = value.get("count"), value.get("buf-b64", ""), value.get("eof", False)
    if not _is_int(count) or not 0 <= count <= requested:
        raise GuestAgentMisbehaving(f'{what}: "count" is not an integer within 0..{requested}')
    if not isinstance(buf, str) or len(buf) > 4 * math.ceil(requested / 3) or not isinstance(eof, bool):
        raise GuestAgentMisbehaving(f'{what}: "buf-b64" or "eof" has the wrong type or size')
    data = _b64(buf, "buf-b64")
    if len(data) != count:
        raise GuestAgentMisbehaving(f'{what}: "count" is {count} but "buf-b64" holds {len(data)} bytes')
    return data, eof


def _b64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GuestAgentMisbehaving(f'"{field}" is not base64') from exc
