"""Drive a lab guest booted under bare QEMU through its serial console (used by the fixtures)."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, TypedDict, Unpack

from labs.hypervisor.image import TOOLS_DISK_SERIAL, load_image

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "guest" / "build.sh"
QEMU = "qemu-system-x86_64"
# The guest shell prompt, documented in guest/README.md.
PROMPT = re.compile(rb"root@virtlab:[^\r\n]*# ")
CMDLINE = "console=ttyS0 quiet panic=-1"


class SerialGuest:
    """A QEMU guest whose serial console is this process's pipe to QEMU's stdio."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._buf = bytearray()
        self._pos = 0  # everything before this offset has been consumed by expect()
        self._cond = threading.Condition()
        self._markers = 0
        self.boot_seconds: float | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # Popen's default buffered pipe: read1() returns what has arrived instead of waiting for a full block.
        assert isinstance(self.proc.stdout, io.BufferedReader)
        while chunk := self.proc.stdout.read1(65536):
            with self._cond:
                self._buf += chunk
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def transcript(self) -> str:
        return self._buf.decode(errors="replace")

    def expect(self, pattern: re.Pattern[bytes], timeout: float) -> re.Match[bytes]:
        """Wait for `pattern` in output not yet consumed; consume up to the end of the match."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                match = pattern.search(self._buf, self._pos)
                if match:
                    self._pos = match.end()
                    return match
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no {pattern.pattern!r} within {timeout} s; output:\n{self.transcript[-3000:]}"
                    )
                self._cond.wait(min(left, 0.5))

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def wait_prompt(self, timeout: float = 60) -> float:
        """Wait for the first shell prompt; returns (and records) seconds since QEMU started."""
        self.expect(PROMPT, timeout)
        self.boot_seconds = time.monotonic() - self.started
        return self.boot_seconds

    def run(self, command: str, timeout: float = 30) -> tuple[int, str]:
        """Run one shell command line; return its exit code and output (CRLF normalised).

        The markers are typed with quotes, so the terminal's echo of the command line never
        matches the unquoted marker the shell prints.
        """
        self._markers += 1
        n = self._markers
        self.send(f'echo @@"S{n}"; {command}; echo @@"E{n}" $?\n')
        self.expect(re.compile(rb"@@S%d\r?\n" % n), timeout)
        start = self._pos
        end = self.expect(re.compile(rb"@@E%d (\d+)\r?\n" % n), timeout)
        output = bytes(self._buf[start : end.start()]).decode(errors="replace").replace("\r\n", "\n")
        return int(end.group(1)), output

    def check(self, command: str, timeout: float = 30) -> str:
        """Run a command that must succeed; return its output."""
        rc, output = self.run(command, timeout)
        assert rc == 0, f"{command!r} exited {rc}:\n{output}"
        return output

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=5)


def qemu_argv(
    image: Path,
    *,
    machine: str = "pc",
    memory_mib: int = 128,
    append: str = CMDLINE,
    extra: Sequence[str] = (),
) -> list[str]:
    """A bare TCG QEMU command line booting the image (the kernel VirtLab boots, its initrd and the
    read-only tools disk) with the serial on stdio."""
    guest = load_image(image)
    return [
        QEMU, "-accel", "tcg", "-M", machine, "-m", str(memory_mib), "-smp", "1",
        "-nodefaults", "-display", "none", "-no-reboot", "-monitor", "none", "-serial", "stdio",
        "-kernel", str(guest.kernel), "-initrd", str(guest.initrd), "-append", append,
        *extra,
        # Last, as in VirtLab's domains: the guest names the disks of `extra` first (vda, ...).
        "-drive", f"file={guest.tools},if=none,id=tools,format=raw,readonly=on",
        "-device", f"virtio-blk-pci,drive=tools,serial={TOOLS_DISK_SERIAL}",
    ]  # fmt: skip


class QemuOptions(TypedDict, total=False):
    """The keyword arguments of qemu_argv() that a test may set."""

    machine: str
    memory_mib: int
    append: str
    extra: Sequence[str]


class BootGuest(Protocol):
    """The `boot_guest` fixture: `with boot_guest(machine=..., extra=[...]) as vm:`."""

    def __call__(self, **options: Unpack[QemuOptions]) -> contextlib.AbstractContextManager[SerialGuest]: ...
