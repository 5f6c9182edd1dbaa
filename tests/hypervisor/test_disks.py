"""Disks: the scratch disk is a qcow2 overlay when the image ships a base disk; the base stays intact."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from labs.hypervisor import Hypervisor
from labs.hypervisor.disks import list_disk_sessions

from .conftest import BOOT_TIMEOUT_S, new_session_id

pytestmark = [pytest.mark.vm, pytest.mark.slow]

# Under /var/lib/virtlab (0755) rather than pytest's 0700 tmp dirs: QEMU opens these files as the
# unprivileged qemu user.
TEST_IMAGES = Path("/var/lib/virtlab/test-images")
MARKER = b"virtlab-base-disk"


@pytest.fixture
def image_with_base_disk(guest_image: Path) -> Iterator[Path]:
    """A copy of the guest image directory whose disk.qcow2 starts with MARKER."""
    directory = TEST_IMAGES / new_session_id()
    directory.mkdir(parents=True, mode=0o755)
    TEST_IMAGES.chmod(0o755)
    for name in ("bzImage", "vmlinux", "initrd.img", "tools.img", "manifest.json"):
        (directory / name).symlink_to(guest_image / name)
    raw = directory / "base.raw"
    raw.write_bytes(MARKER + bytes(1024 * 1024 - len(MARKER)))
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(directory / "disk.qcow2")], check=True
    )
    raw.unlink()
    (directory / "disk.qcow2").chmod(0o644)
    yield directory
    shutil.rmtree(directory)


def test_scratch_disk_is_an_overlay_on_the_image_base_disk(
    hv: Hypervisor, image_with_base_disk: Path, tmp_path: Path
) -> None:
    base = image_with_base_disk / "disk.qcow2"
    vm = hv.create_vm(new_session_id(), "tiny", image_with_base_disk)
    try:
        vm.wait_ready(BOOT_TIMEOUT_S)
        (disk,) = vm.block_info()
        info = json.loads(
            subprocess.run(
                ["qemu-img", "info", "-U", "--output=json", disk.path], capture_output=True, text=True, check=True
            ).stdout
        )
        assert info["format"] == "qcow2"
        assert Path(info["full-backing-filename"]).resolve() == base.resolve()
        assert info["backing-filename-format"] == "qcow2"

        assert vm.exec(f"head -c{len(MARKER)} /dev/vda").stdout == MARKER
        assert vm.exec("printf CHANGED | dd of=/dev/vda conv=fsync 2>/dev/null").ok
        assert vm.exec("head -c7 /dev/vda").stdout == b"CHANGED"
    finally:
        vm.destroy()
    # The guest's write went to its overlay only: the shared base is unchanged.
    raw = tmp_path / "base.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(base), str(raw)], check=True)
    assert raw.read_bytes().startswith(MARKER)


def test_disk_listing_names_sessions_only(tmp_path: Path) -> None:
    """The clones' `_templates` directory (and any stray name) is no session: the reaper and the
    audits that list session disks must never count it as an orphan."""
    for name in ("s-abc123", "_templates", "lost+found"):
        (tmp_path / name).mkdir()
    assert list_disk_sessions(tmp_path) == ["s-abc123"]
