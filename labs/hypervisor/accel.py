"""Choose the accelerator: KVM only if an ordinary guest kernel really boots under it, else TCG.

A usable-looking /dev/kvm is not enough: on PVM hosts it only runs PVM-enlightened guests and a
stock kernel dies with "KVM internal error". So the probe boots the real guest kernel under KVM
for a few seconds and looks for the kernel reaching its late init. The verdict is cached per
(host kernel, /dev/kvm, QEMU binary) on disk and in the process.
"""

from __future__ import annotations

import json
import os
import platform
import select
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .polling import Deadline

DEFAULT_CACHE = Path("/var/lib/virtlab/accel.json")
PROBE_TIMEOUT_S = 20.0
_SUCCESS_MARK = b"Freeing unused kernel"
_FAILURE_MARKS = (b"KVM internal error", b"emulation failure", b"failed to set MSR", b"Could not access KVM")


@dataclass(frozen=True)
class AccelChoice:
    """The accelerator VirtLab uses on this host and why."""

    accelerator: str  # "kvm" or "tcg"
    reason: str
    probe_s: float = 0.0


_memo: dict[str, AccelChoice] = {}


def _host_key(qemu: str) -> str:
    try:
        rdev = os.stat("/dev/kvm").st_rdev
    except OSError:
        rdev = -1
    qemu_stat = os.stat(qemu)
    return f"{platform.release()}|kvm={rdev}|{qemu}|{qemu_stat.st_size}|{int(qemu_stat.st_mtime)}"


def _boot_under_kvm(qemu: str, kernel: Path, initrd: Path) -> tuple[bool, str]:
    """Boot `kernel` under KVM until it reaches late init, fails, or the probe times out."""
    # Fixed arguments only; the kernel path comes from the validated image directory.
    argv = [
        qemu, "-accel", "kvm", "-M", "pc", "-m", "128", "-smp", "1", "-nodefaults",
        "-display", "none", "-no-reboot", "-monitor", "none", "-serial", "stdio",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", "console=ttyS0 panic=-1",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = b""
    deadline = Deadline(PROBE_TIMEOUT_S)
    try:
        while not deadline.expired():
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    return False, f"QEMU exited ({proc.wait()}): {output[-200:].decode(errors='replace')}"
                output += chunk
            if _SUCCESS_MARK in output:
                return True, "a stock guest kernel reached late init under KVM"
            for mark in _FAILURE_MARKS:
                if mark in output:
                    return False, f"guest kernel fails under KVM: {mark.decode()}"
        return False, f"guest kernel did not reach init under KVM within {PROBE_TIMEOUT_S:.0f}s"
    finally:
        proc.kill()
        proc.wait()


def probe_accelerator(kernel: Path, initrd: Path, cache: Path | None = DEFAULT_CACHE) -> AccelChoice:
    """Decide between KVM and TCG for guests booting `kernel` (cached)."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return AccelChoice("tcg", "qemu-system-x86_64 not found")
    key = _host_key(qemu)
    if key in _memo:
        return _memo[key]
    if cache is not None and cache.is_file():
        try:
            stored = json.loads(cache.read_text())
            if stored.get("key") == key:
                choice = AccelChoice(**stored["choice"])
                _memo[key] = choice
                return choice
        except (OSError, ValueError, TypeError, KeyError):
            pass  # a corrupt cache is simply re-probed
    choice = _probe(qemu, kernel, initrd)
    _memo[key] = choice
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "choice": asdict(choice)}))
        os.replace(tmp, cache)
    return choice


def _probe(qemu: str, kernel: Path, initrd: Path) -> AccelChoice:
    if not os.path.exists("/dev/kvm"):
        return AccelChoice("tcg", "/dev/kvm does not exist")
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as exc:
        return AccelChoice("tcg", f"/dev/kvm is not usable: {exc.strerror}")
    started = time.monotonic()
    works, reason = _boot_under_kvm(qemu, kernel, initrd)
    return AccelChoice("kvm" if works else "tcg", reason, round(time.monotonic() - started, 2))
