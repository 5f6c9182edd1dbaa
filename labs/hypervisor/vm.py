"""A handle on one VirtLab VM (a tagged libvirt domain) and everything done to it."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import libvirt

from . import device_state
from .console import Console
from .disks import remove_session_disks
from .errors import DomainMissing, HypervisorError, SnapshotMissing, map_libvirt_error, translated
from .guest_agent import ExecResult, GuestAgent
from .naming import check_snapshot_name
from .polling import poll

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}


@dataclass(frozen=True)
class BlockInfo:
    """Size information of one disk, as seen from the host (a guest cannot fake it)."""

    target: str
    path: str
    capacity: int
    allocation: int
    physical: int


class VM:
    """One session's VM. Obtain it from Hypervisor.create_vm() or Hypervisor.vm()."""

    def __init__(self, conn: libvirt.virConnect, domain: libvirt.virDomain, session_id: str, disks_root: Path):
        self._conn = conn
        self._domain = domain
        self.session_id = session_id
        self._disks_root = disks_root

    @property
    def name(self) -> str:
        """The libvirt domain name."""
        return str(self._domain.name())

    def state(self) -> str:
        """ "running", "paused", "shutoff", ... ; "missing" if the domain no longer exists."""
        try:
            state, _reason = self._domain.state()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return "missing"
            raise
        return _STATES.get(state, "unknown")

    def is_running(self) -> bool:
        """Whether the guest is running (or paused)."""
        return self.state() in ("running", "blocked", "paused")

    def start(self) -> None:
        """Start the defined domain (resumes from a managed save if one exists)."""
        try:
            if not self._domain.isActive():
                self._domain.create()
        except libvirt.libvirtError as exc:
            # A concurrent start (a retried task) won the race: the VM is up, which is the goal.
            if exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and self._domain.isActive():
                return
            raise map_libvirt_error(exc) from exc

    @property
    def agent(self) -> GuestAgent:
        """The guest-agent control channel."""
        return GuestAgent(self._domain)

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        """Wait until the guest agent answers; return seconds waited."""
        return self.agent.wait_ready(timeout_s)

    def exec(self, command: str | Sequence[str], timeout_s: float = 30.0, stdin: bytes | None = None) -> ExecResult:
        """Run a command in the guest over the control channel."""
        return self.agent.exec(command, timeout_s=timeout_s, stdin=stdin)

    def console(self, wake: bool = True) -> Console:
        """Attach to the serial console (reattach after revert: the old stream ends)."""
        return Console(self._conn, self._domain, wake=wake)

    def xml(self, inactive: bool = False) -> str:
        """The domain XML as libvirt sees it (live unless `inactive`)."""
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        with translated():
            return str(self._domain.XMLDesc(flags))

    def disk_targets(self) -> list[tuple[str, str]]:
        """(target, source path) of every disk of the session: not the image's shared read-only tools disk."""
        root = ET.fromstring(self.xml())  # noqa: S314 - libvirtd output
        result = []
        for disk in root.findall("./devices/disk"):
            target, source = disk.find("target"), disk.find("source")
            if disk.find("readonly") is not None:
                continue
            if target is not None and source is not None and source.get("file"):
                result.append((target.get("dev", ""), source.get("file", "")))
        return result

    def block_info(self) -> list[BlockInfo]:
        """Capacity/allocation of each disk, read by libvirt from the host side."""
        infos = []
        with translated():
            for target, path in self.disk_targets():
                capacity, allocation, physical = self._domain.blockInfo(target)
                infos.append(BlockInfo(target, path, capacity, allocation, physical))
        return infos

    def snapshot(self, name: str) -> None:
        """Take an internal live snapshot (RAM + every disk) called `name`.

        On a domain with a device QEMU does not snapshot, the guest agent must be up: the guest
        keeps that device's configuration in its RAM for revert() to put back (device_state).
        """
        if device_state.has_unsaved_devices(self.xml()):
            self._guest_script(device_state.SAVE_SCRIPT, "saving device state")
        element = ET.Element("domainsnapshot")
        ET.SubElement(element, "name").text = check_snapshot_name(name)
        with translated():
            self._domain.snapshotCreateXML(ET.tostring(element, encoding="unicode"), 0)

    def _snapshot(self, name: str) -> libvirt.virDomainSnapshot:
        with translated():
            try:
                return self._domain.snapshotLookupByName(check_snapshot_name(name), 0)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                    raise SnapshotMissing(f"{self.name} has no snapshot {name!r}") from exc
                raise

    def revert(self, name: str, agent_timeout_s: float = 120.0) -> None:
        """Roll RAM and disks back to snapshot `name`; open consoles end and must be reattached.

        Where a device's state is not in the snapshot, waits (up to `agent_timeout_s`) for the
        guest agent and has the guest restore it before returning.
        """
        snapshot = self._snapshot(name)
        with translated():
            self._domain.revertToSnapshot(snapshot, libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING)
        if device_state.has_unsaved_devices(self.xml()):
            self.wait_ready(agent_timeout_s)
            self._guest_script(device_state.RESTORE_SCRIPT, "restoring device state")

    def _guest_script(self, script: str, what: str) -> None:
        result = self.exec(script)
        if not result.ok:
            output = (result.stderr or result.stdout).decode(errors="replace").strip()
            raise HypervisorError(f"{self.name}: {what} in the guest failed (exit {result.exit_code}): {output}")

    def delete_snapshot(self, name: str) -> None:
        """Delete snapshot `name` (its data inside the qcow2 files too)."""
        snapshot = self._snapshot(name)
        with translated():
            snapshot.delete(0)

    def set_cpu_weight(self, weight: int) -> None:
        """The VM's CPU weight against the host's other VMs, live (cgroup cpu.weight; libvirt's
        cpu_shares, 100 by default on cgroup v2): under contention CPU time goes in proportion."""
        with translated():
            self._domain.setSchedulerParametersFlags({"cpu_shares": weight}, libvirt.VIR_DOMAIN_AFFECT_LIVE)

    def cpu_weight(self) -> int:
        with translated():
            return int(self._domain.schedulerParametersFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE)["cpu_shares"])

    def list_snapshots(self) -> list[str]:
        """Names of the domain's snapshots, oldest first."""
        with translated():
            snapshots = self._domain.listAllSnapshots(0)
            return [s.getName() for s in sorted(snapshots, key=_creation_time)]

    def managed_save(self) -> None:
        """Save RAM to disk and stop; the next start() resumes where it was."""
        with translated():
            self._domain.managedSave(0)

    def has_managed_save(self) -> bool:
        """Whether start() will resume from a managed save."""
        with translated():
            return bool(self._domain.hasManagedSaveImage(0))

    def shutdown(self, timeout_s: float = 10.0) -> bool:
        """Power the guest off cleanly; return whether it stopped within the timeout.

        Tries qemu-ga's guest-shutdown, then (busybox guests have no /sbin/shutdown) an immediate
        `poweroff -f` through the agent. The domain stays defined, with its disks.
        """
        if self._stopped():
            return True
        # qemu-ga often exits before replying to a shutdown.
        with contextlib.suppress(HypervisorError):
            self.agent.command("guest-shutdown", {"mode": "powerdown"}, timeout_s=2)
        if self._wait_stopped(2.0):
            return True
        with contextlib.suppress(HypervisorError):
            self.agent.command("guest-exec", {"path": "/bin/busybox", "arg": ["poweroff", "-f"]})
        return self._wait_stopped(timeout_s)

    def _stopped(self) -> bool:
        # Not merely "not running": libvirt reports "shutdown" while QEMU is still powering off.
        return self.state() in ("shutoff", "crashed", "missing")

    def _wait_stopped(self, timeout_s: float) -> bool:
        return bool(poll(self._stopped, timeout_s=timeout_s, interval_s=0.1))

    def _stop_now(self) -> None:
        try:
            if self._domain.isActive():
                self._domain.destroy()
        except libvirt.libvirtError as exc:
            # The guest powered itself off between the check and the destroy: that is stopped too.
            if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID or self._domain.isActive():
                raise

    def destroy(self) -> None:
        """Stop the VM, undefine it (with snapshot and save metadata) and delete its disks.

        Idempotent: destroying a missing VM only removes leftover disks.
        """
        try:
            with translated():
                self._stop_now()
                self._domain.undefineFlags(
                    libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                    | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                )
        except DomainMissing:
            pass
        remove_session_disks(self._disks_root, self.session_id)


def _creation_time(snapshot: libvirt.virDomainSnapshot) -> tuple[int, int]:
    """When it was taken, in whole seconds; ties (two checkpoints within a second) go by how many
    snapshots it descends from: each new one's parent is the one current when it was taken."""
    root = ET.fromstring(snapshot.getXMLDesc(0))  # noqa: S314 - libvirtd output
    return int(root.findtext("creationTime") or 0), _depth(snapshot)


def _depth(snapshot: libvirt.virDomainSnapshot) -> int:
    depth = 0
    with contextlib.suppress(libvirt.libvirtError):  # VIR_ERR_NO_DOMAIN_SNAPSHOT: the root
        while True:
            snapshot = snapshot.getParent(0)
            depth += 1
    return depth
