"""Fixtures for tests that need the lab guest image: building it and booting it under bare QEMU.

`guest_image` builds (or reuses) the image with guest/build.sh once per session; any test in
the suite may request it. `boot_guest` starts a TCG guest on the serial console and gives a
`SerialGuest` that runs shell commands and returns (exit code, output).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Unpack

import pytest

from tests import servers

from .serial_guest import BUILD_SCRIPT, QEMU, BootGuest, QemuOptions, SerialGuest, qemu_argv

NEEDS_ROOT = 77  # build.sh: the image must be built, which needs root


@pytest.fixture(scope="session")
def guest_image() -> Path:
    """Directory holding vmlinux, bzImage, initrd.img and manifest.json (built once, cached)."""
    proc = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode == NEEDS_ROOT:
        servers.unavailable(f"no cached guest image and not root: {proc.stderr.strip().splitlines()[-1]}")
    if proc.returncode != 0:
        pytest.fail(f"guest/build.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    image = Path(proc.stdout.strip().splitlines()[-1])
    assert (image / "manifest.json").is_file(), image
    return image


@pytest.fixture(scope="session")
def boot_guest(guest_image: Path) -> BootGuest:
    """Factory: `with boot_guest(machine=..., extra=[...]) as vm:` boots to the prompt."""
    if shutil.which(QEMU) is None:
        servers.unavailable(f"{QEMU} is not installed")

    @contextlib.contextmanager
    def boot(**options: Unpack[QemuOptions]) -> Iterator[SerialGuest]:
        vm = SerialGuest(qemu_argv(guest_image, **options))
        try:
            vm.wait_prompt()
            yield vm
        finally:
            vm.close()

    return boot
