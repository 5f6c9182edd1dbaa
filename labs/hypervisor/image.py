"""The guest image a VM boots: kernel, initrd and manifest built by guest/build.sh."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ImageInvalid

# The guest's init mounts the virtio disk with this serial as its tools (see guest/build.sh).
TOOLS_DISK_SERIAL = "virtlab-tools"


@dataclass(frozen=True)
class GuestImage:
    """A built guest image directory, validated."""

    directory: Path
    kernel: Path
    initrd: Path
    tools: Path  # read-only squashfs with everything but busybox and the agent (see guest/build.sh)
    image_hash: str
    manifest: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def features(self) -> list[str]:
        """Kernel features the image offers: its "features", else the modules it ships."""
        value = self.manifest.get("features") or self.manifest.get("modules") or []
        if isinstance(value, dict):
            return sorted(k for k, v in value.items() if v)
        return sorted(str(v) for v in value) if isinstance(value, list) else []

    def has_program(self, name: str) -> bool:
        """Whether the manifest lists `name` among the programs built into the image."""
        for key in ("programs", "tools"):
            value = self.manifest.get(key, [])
            if isinstance(value, dict) and name in value:
                return True
            if isinstance(value, list) and any(name == (v.get("name") if isinstance(v, dict) else v) for v in value):
                return True
        return False


def _check_world_traversable(path: Path) -> None:
    # QEMU opens the kernel as the unprivileged qemu user: every parent directory needs o+x.
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            raise ImageInvalid(
                f"{parent} is not traversable by the qemu user (mode {oct(mode & 0o777)}); "
                "run scripts/setup-libvirt.sh or chmod o+x it"
            )


# Which kernel VMs boot ($VIRTLAB_GUEST_KERNEL). Measured on a `tiny` VM under TCG (README):
# "bzImage" (default): idle RSS ~145 MiB, boot ~3 s longer (the guest decompresses the kernel);
# "vmlinux": the PVH ELF skips that, but QEMU keeps the 39 MiB file mapped for resets: ~168 MiB.
KERNELS = ("bzImage", "vmlinux")
DEFAULT_KERNEL = "bzImage"


def kernel_choice() -> str:
    """The configured kernel file name; ImageInvalid names the valid values."""
    choice = os.environ.get("VIRTLAB_GUEST_KERNEL", "").strip() or DEFAULT_KERNEL
    if choice not in KERNELS:
        raise ImageInvalid(f"VIRTLAB_GUEST_KERNEL={choice!r}: choose one of {', '.join(KERNELS)}")
    return choice


def load_image(directory: Path | str) -> GuestImage:
    """Validate an image directory and describe it, with the kernel of kernel_choice()."""
    directory = Path(directory).resolve()
    manifest_path = directory / "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise ImageInvalid(f"{manifest_path}: {exc}") from exc
    kernel, initrd, tools = directory / kernel_choice(), directory / "initrd.img", directory / "tools.img"
    if not (kernel.is_file() and initrd.is_file() and tools.is_file()):
        raise ImageInvalid(f"{directory}: needs {kernel.name}, initrd.img and tools.img (rebuild: make guest)")
    _check_world_traversable(kernel)
    image_hash = str(manifest.get("hash") or manifest.get("image_hash") or directory.name)
    if not os.access(kernel, os.R_OK):
        raise ImageInvalid(f"{kernel} is not readable")
    return GuestImage(directory, kernel, initrd, tools, image_hash, manifest)
