"""Domain exceptions for the hypervisor layer, mapped from libvirt's error codes.

Callers (Celery tasks, the reconciler) catch these instead of `libvirt.libvirtError`, so they can
tell "retry later" (HostUnreachable, OutOfCapacity) from "the VM is gone" (DomainMissing).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import libvirt


class HypervisorError(Exception):
    """Base class of every error this package raises."""


class HostUnreachable(HypervisorError):
    """libvirtd cannot be reached or the connection broke; retry on this or another host."""


class OutOfCapacity(HypervisorError):
    """The host has no room for another VM right now; queue the start."""


class OutOfMemory(OutOfCapacity):
    """Not enough free host memory to start the VM."""


class DomainMissing(HypervisorError):
    """The domain does not exist (never created, or already destroyed)."""


class SnapshotMissing(HypervisorError):
    """The named snapshot does not exist on the domain."""


class DomainNotRunning(HypervisorError):
    """The operation needs a running domain."""


class ImageInvalid(HypervisorError):
    """The guest image directory is missing files or is not readable by QEMU's user."""


class GuestAgentUnavailable(HypervisorError):
    """The guest agent is not connected or not answering."""


class GuestAgentTimeout(GuestAgentUnavailable):
    """The guest agent did not become ready (or answer) in time."""


class CommandTimeout(HypervisorError):
    """A command run through the guest agent did not finish in time (it was killed)."""

    def __init__(self, message: str, partial_stdout: bytes = b"", partial_stderr: bytes = b""):
        super().__init__(message)
        self.partial_stdout = partial_stdout
        self.partial_stderr = partial_stderr


class TemplateInvalid(HypervisorError):
    """A template (or its save image) is missing, incomplete or not in the expected format."""


class TemplateInUse(HypervisorError):
    """A template still backs clones' disks: it must not be removed."""


class ConsoleClosed(HypervisorError):
    """The console stream ended (domain stopped, reverted, or another client took it)."""


_MISSING_CODES = {libvirt.VIR_ERR_NO_DOMAIN}
_UNREACHABLE_CODES = {
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_AUTH_FAILED,
}
_AGENT_CODES = {libvirt.VIR_ERR_AGENT_UNRESPONSIVE, libvirt.VIR_ERR_AGENT_UNSYNCED}
_NOT_RUNNING_CODES = {libvirt.VIR_ERR_OPERATION_INVALID}


def map_libvirt_error(exc: libvirt.libvirtError) -> HypervisorError:
    """Translate a libvirtError into the closest VirtLab exception (message preserved)."""
    code = exc.get_error_code()
    message = exc.get_error_message() or str(exc)
    if code in _MISSING_CODES:
        return DomainMissing(message)
    if code == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
        return SnapshotMissing(message)
    if code in _AGENT_CODES:
        return GuestAgentUnavailable(message)
    if "Cannot allocate memory" in message or "cannot set up guest memory" in message:
        return OutOfMemory(message)
    if code in _UNREACHABLE_CODES and exc.get_error_domain() in (
        libvirt.VIR_FROM_RPC,
        libvirt.VIR_FROM_REMOTE,
        libvirt.VIR_FROM_NONE,
    ):
        return HostUnreachable(message)
    if code in _NOT_RUNNING_CODES and "not running" in message:
        return DomainNotRunning(message)
    return HypervisorError(message)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Re-raise any libvirtError raised in the block as a HypervisorError subclass."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise map_libvirt_error(exc) from exc


def _ignore_error(_ctx: object, _err: object) -> None:
    """libvirt's default handler prints every error to stderr; errors reach us as exceptions."""


def silence_libvirt_stderr() -> None:
    """Stop libvirt printing errors on stderr (they are raised as exceptions anyway)."""
    libvirt.registerErrorHandler(_ignore_error, None)
