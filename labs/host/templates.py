"""This host's templates: one captured VM per (lab, profile), cloned instead of cold-booting.

A template is keyed by what its captured state is made of: the guest image (hash and kernel), the
profile, and the lab's content (every file of its folder). An edited lab or a new image makes a
new key, so the next clone comes from a new template; the stale one is removed by the reconciler
once no clone's disks are backed by it any more (labs/hypervisor/clones.py refuses before that).
`lab_slug` "" is the template of a freshly booted VM of the profile (the generic warm pool).

Building one boots a VM (~8 s of CPU under TCG), so it happens at most once per key on a host: under
a file lock, so two workers never build the same one (the second waits and takes the first's). The
lock file names the VM being built, so the reconciler spares it (reserved_vm_ids).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from labs.catalog import Lab
from labs.host import verify
from labs.hypervisor import Hypervisor, HypervisorError, load_image
from labs.hypervisor.clones import Template, load_template, make_templates_root
from labs.hypervisor.errors import TemplateInUse
from labs.models import id_prefixes, new_pool_id
from labs.services.catalog import require_lab

log = logging.getLogger(__name__)
# Background work nobody waits on: a boot on a host busy with other VMs may take minutes under TCG.
BOOT_TIMEOUT_S = 300.0
_BUILD_LOCK = ".build-"
_WANTED = ".wanted-"


def template_key(lab: Lab | None, profile: str, image_dir: Path) -> str:
    """The name of the template a clone of `lab` (None: a bare boot) on `profile` comes from now."""
    image = load_image(image_dir)
    digest = hashlib.sha256()
    for part in (image.image_hash, image.kernel.name, profile):
        digest.update(part.encode() + b"\0")
    if lab is not None:
        for path in sorted(p for p in lab.path.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(lab.path)).encode() + b"\0" + path.read_bytes() + b"\0")
    # Prefixed with this deployment's pool-VM prefix: deployments (and test stacks) sharing the
    # host's disks root never take, or reap, each other's templates.
    return f"{id_prefixes()[1]}{lab.slug if lab is not None else 'boot'}.{profile}.{digest.hexdigest()[:16]}"


def _root(hv: Hypervisor) -> Path:
    return make_templates_root(hv.disks_root)


def find(hv: Hypervisor, lab_slug: str, profile: str) -> Template | None:
    """The current template of (`lab_slug`, `profile`) on this host, if it has been built."""
    key = template_key(require_lab(lab_slug) if lab_slug else None, profile, settings.GUEST_IMAGE_DIR)
    directory = _root(hv) / key
    if not directory.is_dir():
        return None
    try:
        return load_template(directory)
    except HypervisorError:
        return None


def ensure(hv: Hypervisor, lab_slug: str, profile: str) -> Template:
    """The current template of (`lab_slug`, `profile`), built now if missing (one builder per key)."""
    lab = require_lab(lab_slug) if lab_slug else None
    key = template_key(lab, profile, settings.GUEST_IMAGE_DIR)
    found = find(hv, lab_slug, profile)
    if found is not None:
        return found
    with _build_lock(hv, key) as note_vm:
        found = find(hv, lab_slug, profile)  # built by another worker while we waited
        if found is not None:
            return found
        return _build(hv, lab, profile, key, note_vm)


@contextlib.contextmanager
def _build_lock(hv: Hypervisor, key: str) -> Iterator[_NoteVM]:
    fd = os.open(_root(hv) / f"{_BUILD_LOCK}{key}", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield _NoteVM(fd)
    finally:
        os.ftruncate(fd, 0)
        os.close(fd)


class _NoteVM:
    """Writes the id of the VM being built into the held build lock (for reserved_vm_ids)."""

    def __init__(self, fd: int):
        self._fd = fd

    def __call__(self, vm_id: str) -> None:
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, vm_id.encode(), 0)


def _build(hv: Hypervisor, lab: Lab | None, profile: str, key: str, note_vm: _NoteVM) -> Template:
    # In the warm pool's id namespace: if this worker dies mid-build, the reconciler reaps the VM.
    vm_id = new_pool_id()
    note_vm(vm_id)
    started = time.monotonic()
    vm = hv.create_vm(vm_id, profile, settings.GUEST_IMAGE_DIR, clonable=True)
    try:
        vm.wait_ready(BOOT_TIMEOUT_S)
        if lab is not None:
            verify.run_setup(vm, lab.step(1))
        labels = {"lab_slug": lab.slug if lab is not None else "", "profile": profile}
        template = hv.capture_template(vm, _root(hv) / key, labels)
    except BaseException:
        with contextlib.suppress(HypervisorError):
            vm.destroy()
        raise
    log.info("template %s built in %.1fs", key, time.monotonic() - started)
    return template


def reserved_vm_ids(hv: Hypervisor) -> set[str]:
    """VMs being built into templates right now (their build lock is held): not orphans."""
    ids = set()
    for lock in _root(hv).glob(f"{_BUILD_LOCK}*"):
        fd = os.open(lock, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                vm_id = os.pread(fd, 64, 0).decode(errors="replace").strip()
                if vm_id:
                    ids.add(vm_id)
        finally:
            os.close(fd)
    return ids


def request(hv: Hypervisor, lab_slug: str, profile: str) -> None:
    """Ask for (`lab_slug`, `profile`)'s template to be built in the background (fill_pool builds it)."""
    _wanted_marker(hv, lab_slug, profile).write_text(json.dumps({"lab_slug": lab_slug, "profile": profile}))


def _wanted_marker(hv: Hypervisor, lab_slug: str, profile: str) -> Path:
    return _root(hv) / f"{_WANTED}{id_prefixes()[1]}{lab_slug or 'boot'}.{profile}"


def requested(hv: Hypervisor) -> list[tuple[str, str]]:
    """(lab_slug, profile) of the templates asked for and not built yet."""
    wanted = []
    for marker in sorted(_root(hv).glob(f"{_WANTED}{id_prefixes()[1]}*")):
        try:
            data = json.loads(marker.read_text())
            lab_slug, profile = str(data["lab_slug"]), str(data["profile"])
            missing = find(hv, lab_slug, profile) is None
        except (OSError, ValueError, KeyError, TypeError, LookupError):  # unreadable, or the lab is gone
            marker.unlink(missing_ok=True)
            continue
        if missing:
            wanted.append((lab_slug, profile))
        else:
            marker.unlink(missing_ok=True)
    return wanted


def build_requested(hv: Hypervisor, lab_slug: str, profile: str) -> None:
    """Build one requested template and drop its request (kept on failure: the next round retries)."""
    ensure(hv, lab_slug, profile)
    _wanted_marker(hv, lab_slug, profile).unlink(missing_ok=True)


def reap_stale(hv: Hypervisor) -> list[str]:
    """Remove templates no clone will come from again (lab edited or gone, new image, unknown) and
    that back no clone's disks any more; returns their keys."""
    removed = []
    for template in hv.templates():
        if not template.key.startswith(id_prefixes()[1]):
            continue  # another deployment's
        lab_slug, profile = template.labels.get("lab_slug", ""), template.labels.get("profile", template.profile)
        try:
            current = template_key(require_lab(lab_slug) if lab_slug else None, profile, settings.GUEST_IMAGE_DIR)
        except (LookupError, HypervisorError):
            current = ""  # the lab was removed (or the image is unreadable): nothing clones from this
        if template.key == current:
            continue
        try:
            hv.remove_template(template)
        except TemplateInUse:
            continue  # its clones still run: removed by a later round, after they are gone
        (_root(hv) / f"{_BUILD_LOCK}{template.key}").unlink(missing_ok=True)  # its key is never built again
        removed.append(template.key)
        log.info("template %s removed: stale, and no clone uses it", template.key)
    return removed
