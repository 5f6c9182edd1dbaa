"""Per-session qcow2 disks under one root directory (default /var/lib/virtlab/disks/<session>/).

Every disk of a session lives in the session's own directory, so removing a session's disks is
one directory removal and can never reach files VirtLab did not create.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from labs.profiles import Profile

from .errors import HypervisorError
from .naming import check_session_id, is_session_id

DEFAULT_DISKS_ROOT = Path("/var/lib/virtlab/disks")
QEMU_IMG_TIMEOUT_S = 30


@dataclass(frozen=True)
class DiskPlan:
    """One disk to attach: its file and guest device name."""

    path: Path
    target: str  # vda, vdb, ...
    size_mib: int
    backing: Path | None = None


def session_dir(root: Path, session_id: str) -> Path:
    """The directory that holds every disk of a session."""
    return root / check_session_id(session_id)


def plan_disks(root: Path, session_id: str, profile: Profile, base: Path | None = None) -> list[DiskPlan]:
    """The disks a session of `profile` gets: vda scratch (an overlay on `base` if given), extras."""
    directory = session_dir(root, session_id)
    disks = [DiskPlan(directory / "scratch.qcow2", "vda", profile.scratch_disk_mib, base)]
    for index, size in enumerate(profile.extra_disks_mib, start=1):
        disks.append(DiskPlan(directory / f"data{index}.qcow2", "vd" + chr(ord("a") + index), size))
    return disks


def _qemu_img(*args: str) -> None:
    try:
        subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT_S)
    except subprocess.CalledProcessError as exc:
        raise HypervisorError(f"qemu-img {args[0]} failed: {exc.stderr.strip()}") from exc
    except subprocess.TimeoutExpired as exc:
        raise HypervisorError(f"qemu-img {args[0]} timed out after {QEMU_IMG_TIMEOUT_S}s") from exc


def create_disks(plans: list[DiskPlan]) -> None:
    """Create the planned disks that do not exist yet (idempotent)."""
    for plan in plans:
        # 0711: QEMU (qemu user) can open its files by name; nobody can list other sessions'.
        plan.path.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        if plan.path.exists():
            continue
        partial = plan.path.with_suffix(".partial")
        if plan.backing is not None:
            _qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(plan.backing), str(partial))
        else:
            _qemu_img("create", "-q", "-f", "qcow2", str(partial), f"{plan.size_mib}M")
        # Rename last so a crash mid-create never leaves a half-written disk under the real name.
        os.replace(partial, plan.path)


def remove_session_disks(root: Path, session_id: str) -> bool:
    """Delete a session's disk directory; return whether anything was removed."""
    directory = session_dir(root, session_id)
    if not directory.exists():
        return False
    shutil.rmtree(directory)
    return True


def list_disk_sessions(root: Path) -> list[str]:
    """Session ids that have a disk directory under `root` (not the clones' `_templates`, or
    anything else whose name is no session id)."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and is_session_id(p.name))
