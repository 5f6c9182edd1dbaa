"""The guest image a VM boots: kernel, initrd and manifest built by guest/build.sh."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ImageInvalid


@dataclass(frozen=True)
class GuestImage:
    """A built guest image directory, validated."""

    directory: Path
    kernel: Path
    initrd: Path
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


def load_image(directory: Path | str) -> GuestImage:
    """Validate an image directory and describe it (prefers the PVH `vmlinux` for fast boots)."""
    directory = Path(directory).resolve()
    manifest_path = directory / "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise ImageInvalid(f"{manifest_path}: {exc}") from exc
    # The uncompressed PVH kernel skips decompression, which costs 1-2 s under TCG.
    kernel = next((directory / n for n in ("vmlinux", "bzImage") if (directory / n).is_file()), None)
    initrd = directory / "initrd.img"
    if kernel is None or not initrd.is_file():
        raise ImageInvalid(f"{directory}: needs vmlinux or bzImage, and initrd.img")
    _check_world_traversable(kernel)
    image_hash = str(manifest.get("hash") or manifest.get("image_hash") or directory.name)
    if not os.access(kernel, os.R_OK):
        raise ImageInvalid(f"{kernel} is not readable")
    return GuestImage(directory, kernel, initrd, image_hash, manifest)
