"""The Hypervisor: one libvirt connection of one process, and the VMs VirtLab owns on it."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import libvirt

from labs.profiles import PROFILES, Profile, get_profile, vm_cost_mib

from . import clones, confinement, device_state
from .accel import AccelChoice, probe_accelerator
from .disks import (
    DEFAULT_DISKS_ROOT,
    create_disks,
    list_disk_sessions,
    plan_disks,
    remove_session_disks,
    session_dir,
)
from .domain_xml import DomainSpec, SessionTag, VMIdentity, build_domain_xml, parse_session_tag
from .errors import (
    DomainMissing,
    HostUnreachable,
    HypervisorError,
    OutOfCapacity,
    OutOfMemory,
    TemplateInvalid,
    map_libvirt_error,
    silence_libvirt_stderr,
    translated,
)
from .image import GuestImage, load_image
from .libvirt_events import ensure_event_loop
from .naming import METADATA_NS, domain_name, is_session_id, session_of
from .save_image import read_save_image
from .vm import VM

log = logging.getLogger(__name__)
DEFAULT_URI = "qemu:///system"
# Memory left to the host OS, libvirtd and the host agent before VMs are refused.
HOST_RESERVE_MIB = 1024
# reap() spares domains and disk directories younger than this: a create may be in flight whose
# session the caller's list does not show yet.
ORPHAN_GRACE_S = 600.0


@dataclass(frozen=True)
class HostCapacity:
    """What this host can take, for placement."""

    accelerator: str
    accelerator_reason: str
    total_mem_mib: int
    free_mem_mib: int
    vm_count: int
    max_vms: int  # by memory: running VMs plus the `tiny` VMs that still fit
    cpus: int = 1
    disk_free_mib: int = 0  # on the file system holding the VMs' disks and checkpoints
    kernel_features: list[str] = field(default_factory=list)
    image_hash: str = ""


@dataclass(frozen=True)
class TaggedDomain:
    """A domain VirtLab created (name prefix and session metadata both present)."""

    name: str
    tag: SessionTag
    active: bool

    @property
    def session_id(self) -> str:
        """The session the domain belongs to."""
        return self.tag.session_id


class Hypervisor:
    """VirtLab's view of one libvirt host. Create with Hypervisor.connect() (or open())."""

    def __init__(self, conn: libvirt.virConnect, disks_root: Path = DEFAULT_DISKS_ROOT):
        self._conn = conn
        self._pid = os.getpid()
        self._closed = False
        self.disks_root = disks_root

    @classmethod
    def open(cls, uri: str = DEFAULT_URI, disks_root: Path = DEFAULT_DISKS_ROOT) -> Hypervisor:
        """A connection for this process (never at import, never inherited across fork) that the
        caller closes; connect() is the same as a context manager."""
        silence_libvirt_stderr()
        ensure_event_loop()
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise HostUnreachable(f"cannot connect to {uri}: {exc.get_error_message()}") from exc
        # Keepalives turn a dead libvirtd into an error instead of a hang.
        with contextlib.suppress(libvirt.libvirtError):
            conn.setKeepAlive(5, 3)
        return cls(conn, disks_root)

    @classmethod
    @contextlib.contextmanager
    def connect(cls, uri: str = DEFAULT_URI, disks_root: Path = DEFAULT_DISKS_ROOT) -> Iterator[Hypervisor]:
        """Open a connection for this process and close it on leaving the block."""
        hv = cls.open(uri, disks_root)
        try:
            yield hv
        finally:
            hv.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()

    def alive(self) -> bool:
        """Whether the connection still stands, as far as this side knows (no call to libvirtd:
        it answers at once even when libvirtd has stopped reading the connection)."""
        if self._closed:
            return False
        with contextlib.suppress(libvirt.libvirtError):
            return bool(self._conn.isAlive())
        return False

    @property
    def conn(self) -> libvirt.virConnect:
        """The underlying connection, guarded against use from a forked child."""
        if os.getpid() != self._pid:
            raise HypervisorError("libvirt connection used after fork; open a new one in this process")
        return self._conn

    def accelerator(self, image: GuestImage) -> AccelChoice:
        """KVM or TCG for guests of `image` on this host (probed once, cached)."""
        # The compressed kernel fails fastest under a broken KVM; it is the same kernel.
        probe_kernel = image.directory / "bzImage"
        return probe_accelerator(probe_kernel if probe_kernel.is_file() else image.kernel, image.initrd)

    def _lookup(self, session_id: str) -> libvirt.virDomain:
        with translated():
            return self.conn.lookupByName(domain_name(session_id))

    def vm(self, session_id: str) -> VM:
        """The VM of `session_id`; DomainMissing if there is none (or it is not VirtLab's)."""
        domain = self._lookup(session_id)
        if self._tag_of(domain) is None:
            raise DomainMissing(f"{domain_name(session_id)} exists but carries no VirtLab tag")
        return VM(self.conn, domain, session_id, self.disks_root)

    def create_vm(self, session_id: str, profile: Profile | str, image_dir: Path | str, clonable: bool = False) -> VM:
        """Define and start the session's VM; if it already exists, (re)start and return it.

        `clonable`: the VM gets a VM generation ID device, which a template's VM needs (see
        clones.py): its clones tell their guest kernel they are copies."""
        profile = get_profile(profile) if isinstance(profile, str) else profile
        defined_now = False
        try:
            vm = self.vm(session_id)
        except DomainMissing:
            vm = self._define(session_id, profile, load_image(image_dir), clonable)
            defined_now = True
        try:
            vm.start()
        except HypervisorError:
            # A domain defined by this call must not linger half-made; an existing session's VM
            # keeps its disks (the learner's work) even if it cannot start right now.
            if defined_now and not vm.is_running():
                vm.destroy()
            raise
        return vm

    @contextlib.contextmanager
    def _disks_removed_on_failure(self, session_id: str) -> Iterator[None]:
        """Making a VM (a boot or a clone) that fails leaves no disk of the session behind."""
        try:
            yield
        except libvirt.libvirtError as exc:
            remove_session_disks(self.disks_root, session_id)
            raise map_libvirt_error(exc) from exc
        except HypervisorError:
            remove_session_disks(self.disks_root, session_id)
            raise
        except OSError as exc:
            # A file of the VM that cannot be written (a full disk, its directory removed under
            # it) fails this VM like any other cause, as callers handle it: not the whole task.
            remove_session_disks(self.disks_root, session_id)
            error = OutOfCapacity if exc.errno == errno.ENOSPC else HypervisorError
            raise error(f"the files of VM {session_id}: {exc}") from exc

    def _define(self, session_id: str, profile: Profile, image: GuestImage, clonable: bool = False) -> VM:
        self._check_memory(profile)
        base = image.directory / "disk.qcow2"
        disks = plan_disks(self.disks_root, session_id, profile, base if base.is_file() else None)
        accelerator = self.accelerator(image).accelerator
        with self._disks_removed_on_failure(session_id):
            create_disks(disks)
            # Owner-only session files: libvirt hands them to this VM's uid while it runs (confinement.py).
            confinement.make_private(d.path for d in disks)
            kernel, initrd = confinement.private_boot_files(image, session_dir(self.disks_root, session_id))
            with confinement.id_lock(self.disks_root):
                uid = confinement.allocate_id(confinement.used_ids(self.conn))
                identity = VMIdentity(uid, uid, kernel, initrd)
                spec = DomainSpec(session_id, profile, image, tuple(disks), accelerator, datetime.now(UTC), identity)
                xml = build_domain_xml(spec)
                domain = self.conn.defineXML(clones.with_genid(xml) if clonable else xml)
        return VM(self.conn, domain, session_id, self.disks_root)

    def capture_template(self, vm: VM, directory: Path, labels: dict[str, str]) -> clones.Template:
        """Make running `vm` (created `clonable`) a template at `directory`: save it, freeze its
        disks there; the VM itself is gone afterwards (see clones.py)."""
        tag = self._tag_of(self._lookup(vm.session_id))
        if tag is None:
            raise DomainMissing(f"{vm.name} carries no VirtLab tag")
        if device_state.has_unsaved_devices(vm.xml()):
            # Like a snapshot, a save loses edu's PCI configuration: the guest keeps a copy in RAM.
            vm._guest_script(device_state.SAVE_SCRIPT, "saving device state")  # the one helper, vm.py's
        try:
            return clones.capture(
                self.conn, self._lookup(vm.session_id), session_dir(self.disks_root, vm.session_id), directory,
                tag.profile, tag.image_hash, labels,
            )  # fmt: skip
        except libvirt.libvirtError as exc:
            raise map_libvirt_error(exc) from exc

    def restore_clone(
        self, template: clones.Template, session_id: str, image_dir: Path | str, ready_timeout_s: float = 60.0
    ) -> VM:
        """A new VM for `session_id` restored, running, from `template`, its clock set and RNG
        reseeded before it is returned; if the session's VM exists already, that one (started)."""
        with contextlib.suppress(DomainMissing):
            existing = self.vm(session_id)
            existing.start()
            return existing
        image = load_image(image_dir)
        if image.image_hash != template.image_hash:
            raise TemplateInvalid(f"template {template.key} is of image {template.image_hash}, not {image.image_hash}")
        profile = get_profile(template.profile)
        self._check_memory(profile)
        directory = session_dir(self.disks_root, session_id)
        with (
            self._disks_removed_on_failure(session_id),
            clones.template_lock(self.disks_root, template.key, exclusive=False),
        ):
            template = clones.load_template(template.directory)  # not removed meanwhile
            saved = read_save_image(template.save_image)
            plans = clones.plan_overlays(template, self.disks_root, session_id)
            clones.create_overlays(plans)
            kernel, initrd = confinement.private_boot_files(image, directory)
            with confinement.id_lock(self.disks_root):
                uid = confinement.allocate_id(confinement.used_ids(self.conn))
                files = clones.CloneFiles({p.target: p.path for p in plans}, VMIdentity(uid, uid, kernel, initrd))
                xml = clones.clone_xml(saved.xml, template, session_id, files)
                domain = self.conn.defineXML(xml)
            clones.restore(self.conn, domain, template, saved, xml, directory / "restore.save")
        vm = VM(self.conn, domain, session_id, self.disks_root)
        try:
            clones.fresh_guest_state(vm.agent, ready_timeout_s)
            if device_state.has_unsaved_devices(xml):
                vm._guest_script(device_state.RESTORE_SCRIPT, "restoring device state")
        except HypervisorError:
            vm.destroy()
            raise
        return vm

    def reclone(self, vm: VM, image_dir: Path | str, ready_timeout_s: float = 60.0) -> VM:
        """`vm`, a clone, made again from the template it was restored from: the template's state
        (for a lab's template, step 1 set up), fresh disks, the same name. A clone's first
        checkpoint is this rather than a snapshot of its own: a snapshot writes the guest's RAM
        into its disk, about as much work as the restore, for every seat of a class.
        TemplateInvalid if `vm` is no clone or its template is gone (nothing changed then)."""
        template = clones.template_of(vm.xml(inactive=True), self.templates())
        if template is None:
            raise TemplateInvalid(f"{vm.session_id} is not a clone of a template on this host")
        # Held across the gap, so that no clean-up takes the template while it has no clone.
        with clones.template_lock(self.disks_root, template.key, exclusive=False):
            vm.destroy()
            return self.restore_clone(template, vm.session_id, image_dir, ready_timeout_s)

    def templates(self) -> list[clones.Template]:
        """The complete templates on this host."""
        return clones.list_templates(self.disks_root)

    def template_users(self, template: clones.Template) -> list[str]:
        """Domains whose disks are backed by `template`."""
        with translated():
            return clones.users(self.conn, template)

    def remove_template(self, template: clones.Template) -> None:
        """Delete `template`; TemplateInUse while a clone's disks are backed by it."""
        with translated():
            clones.remove(self.conn, self.disks_root, template)

    def check_confinement(self) -> confinement.ConfinementState:
        """Prove that VMs on this host run confined (per-VM uid, seccomp, CPU quota): see confinement.py."""
        try:
            return confinement.check_host(self.conn)
        except libvirt.libvirtError as exc:
            raise map_libvirt_error(exc) from exc

    def _memory_mib(self) -> tuple[int, int]:
        with translated():
            stats = self.conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
        total = stats.get("total", 0) // 1024
        # Page cache is reclaimable, so it counts as available (like MemAvailable).
        free = (stats.get("free", 0) + stats.get("buffers", 0) + stats.get("cached", 0)) // 1024
        return int(total), int(free)

    def _check_memory(self, profile: Profile) -> None:
        _total, free = self._memory_mib()
        needed = vm_cost_mib(profile) + HOST_RESERVE_MIB
        if free < needed:
            raise OutOfMemory(f"profile {profile.name} needs {needed} MiB free on the host, {free} MiB are")

    def capacity(self, image_dir: Path | str | None = None) -> HostCapacity:
        """Memory, VM count and slots (budgeted with the `tiny` profile), accelerator, features."""
        total, free = self._memory_mib()
        vm_count = sum(1 for d in self.list_tagged() if d.active)
        slots = max(0, (free - HOST_RESERVE_MIB) // vm_cost_mib(PROFILES["tiny"]))
        accel, reason, features, image_hash = "unknown", "no guest image to probe with", [], ""
        if image_dir is not None:
            image = load_image(image_dir)
            choice = self.accelerator(image)
            accel, reason, features, image_hash = choice.accelerator, choice.reason, image.features, image.image_hash
        with translated():
            cpus = int(self.conn.getInfo()[2])  # active host CPUs
        return HostCapacity(
            accel, reason, total, free, vm_count, vm_count + slots, cpus, self.disk_free_mib(), features, image_hash
        )

    def disk_free_mib(self) -> int:
        """Free space where VM disks and their checkpoints live (QEMU pauses a VM whose disk write
        finds none, so callers stop creating VMs and checkpoints well before)."""
        root = self.disks_root if self.disks_root.exists() else Path("/")
        return shutil.disk_usage(root).free // (1024 * 1024)

    def _tag_of(self, domain: libvirt.virDomain) -> SessionTag | None:
        session_id = session_of(domain.name())
        if session_id is None:
            return None
        try:
            raw = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
        except libvirt.libvirtError:
            return None  # no VirtLab metadata: not ours, whatever its name says
        tag = parse_session_tag(raw)
        return tag if tag is not None and tag.session_id == session_id else None

    def list_tagged(self) -> list[TaggedDomain]:
        """Every domain on the host that VirtLab created."""
        result = []
        with translated():
            domains = self.conn.listAllDomains(0)
        for domain in domains:
            try:
                tag = self._tag_of(domain)
                if tag is not None:
                    result.append(TaggedDomain(domain.name(), tag, bool(domain.isActive())))
            except libvirt.libvirtError:
                continue  # undefined while we looked
        return sorted(result, key=lambda d: d.name)

    def cpu_times(self, namespace: tuple[str, ...] = ("",)) -> dict[str, tuple[int, int]]:
        """(CPU time in ns over every thread of its QEMU, vCPUs) of each running VirtLab VM whose
        session id starts with one of `namespace`: one libvirt call for all of them."""
        with translated():
            stats = self.conn.getAllDomainStats(
                libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_VCPU,
                libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE,
            )
        times = {}
        for domain, values in stats:
            session_id = session_of(domain.name())
            if session_id is not None and session_id.startswith(namespace) and "cpu.time" in values:
                times[session_id] = (int(values["cpu.time"]), int(values.get("vcpu.current", 1)))
        return times

    def reap(
        self, keep_session_ids: Iterable[str], grace_s: float = ORPHAN_GRACE_S, namespace: tuple[str, ...] = ("",)
    ) -> list[str]:
        """Destroy tagged VMs (and orphan disk directories) whose session is not in `keep`.

        Untagged domains are never touched, nor are sessions whose id starts with none of the
        `namespace` prefixes (another deployment's, or a test's, on the same libvirt host).
        Domains and disk directories younger than `grace_s` are spared (a create may be in
        flight). Returns the reaped session ids.
        """
        keep = set(keep_session_ids)
        tagged_ids = [d.session_id for d in self.list_tagged()]
        keep |= {sid for sid in [*tagged_ids, *list_disk_sessions(self.disks_root)] if not sid.startswith(namespace)}
        now = datetime.now(UTC)
        reaped: list[str] = []
        failures: list[str] = []
        for tagged in self.list_tagged():
            if tagged.session_id in keep or _age_s(tagged.tag.created_at, now) < grace_s:
                continue
            try:
                self.vm(tagged.session_id).destroy()
                reaped.append(tagged.session_id)
            except DomainMissing:
                reaped.append(tagged.session_id)
            except HypervisorError as exc:
                failures.append(f"{tagged.name}: {exc}")
        defined = {d.session_id for d in self.list_tagged()}
        for session_id in list_disk_sessions(self.disks_root):
            if session_id in keep or session_id in defined or not is_session_id(session_id):
                continue
            age_s = time.time() - session_dir(self.disks_root, session_id).stat().st_mtime
            if age_s >= grace_s:
                # Disks without a VM or an owner are what a crash leaves: worth a line in the log.
                log.warning("reap: removing the disks of %s (no VM, no owner, %.0f s old)", session_id, age_s)
                remove_session_disks(self.disks_root, session_id)
                if session_id not in reaped:
                    reaped.append(session_id)
        if failures:
            raise HypervisorError("reap failed for " + "; ".join(failures))
        return reaped


def _age_s(created_at: str, now: datetime) -> float:
    """Seconds since an ISO timestamp from the metadata; unreadable timestamps count as old."""
    try:
        created = datetime.fromisoformat(created_at)
    except ValueError:
        return float("inf")
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return (now - created).total_seconds()
