"""Per-VM confinement: every VM's QEMU runs as a uid:gid of its own, and the host check.

sVirt needs a MAC security module, and this kind of host has none for libvirt: AppArmor is not
built into the kernel, and SELinux is built but not enabled (`/sys/kernel/security/lsm` lists
lockdown, capability, landlock and bpf). libvirt's DAC driver gives the same separation by uid:
each domain carries a static label `+uid:+gid` from a reserved range (libvirt has no dynamic DAC
labels), with relabelling on, so libvirt chowns that VM's own files to it while it runs and gives
them back afterwards (`remember_owner`). Those files are 0600: another VM's QEMU, running as
another uid, cannot open them. What every VM shares (the tools disk, the base disk) is declared
`relabel='no'` and stays root-owned and read-only; the kernel and initrd, which libvirt always
relabels, are per-VM copies. QEMU also runs under its seccomp sandbox with no capabilities, in a
private mount namespace, and inside a cgroup with CPU and I/O limits (domain_xml.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from labs.profiles import PROFILES

from .domain_xml import VMIdentity, build_probe_xml, resource_limits
from .errors import HypervisorError, OutOfCapacity
from .image import GuestImage

# VM uids/gids: VIRTLAB_VM_ID_BASE, then VM_ID_COUNT ids. The base itself is the host check's probe;
# VMs get the ones above it. The default sits above useradd's subordinate-id ranges (SUB_UID_MAX
# 600100000) and far from any login or system account; setup-libvirt.sh checks none is in use.
VM_ID_BASE_ENV = "VIRTLAB_VM_ID_BASE"
DEFAULT_VM_ID_BASE = 700_000_000
VM_ID_COUNT = 4096
LOCK_NAME = ".vm-ids.lock"
# The seccomp options libvirt passes with qemu.conf's seccomp_sandbox = 1.
SANDBOX_DENIES = ("elevateprivileges=deny", "spawn=deny", "resourcecontrol=deny", "obsolete=deny")
PROBE_NAME_PREFIX = "virtlab-confinement-probe-"

_DAC_LABEL = re.compile(r"^\+(\d+):\+(\d+)$")


def vm_id_base() -> int:
    """The first id of VirtLab's range; HypervisorError names the variable if it is malformed."""
    raw = os.environ.get(VM_ID_BASE_ENV, "").strip()
    if not raw:
        return DEFAULT_VM_ID_BASE
    if not raw.isdigit() or not 65536 <= int(raw) <= 2**31 - 1 - VM_ID_COUNT:
        raise HypervisorError(f"{VM_ID_BASE_ENV}={raw!r}: use an integer from 65536 to {2**31 - 1 - VM_ID_COUNT}")
    return int(raw)


def vm_ids() -> range:
    """The uids (equal to gids) that VMs may be given."""
    base = vm_id_base()
    return range(base + 1, base + VM_ID_COUNT)


def dac_label_id(domain_xml: str) -> int | None:
    """The uid of a domain's static DAC label (`+uid:+gid`), or None if it has none."""
    try:
        root = ET.fromstring(domain_xml)  # noqa: S314 - written by libvirtd, not by users
    except ET.ParseError:
        return None
    for seclabel in root.findall("seclabel"):
        if seclabel.get("model") == "dac" and seclabel.get("type") == "static":
            match = _DAC_LABEL.match((seclabel.findtext("label") or "").strip())
            if match:
                return int(match.group(1))
    return None


def used_ids(conn: libvirt.virConnect, exclude: str = "") -> set[int]:
    """uids labelled on any domain of the host, running or only defined (VirtLab's or not)."""
    used = set()
    for domain in conn.listAllDomains(0):
        try:
            if domain.name() == exclude:
                continue
            uid = dac_label_id(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        except libvirt.libvirtError:
            continue  # undefined while we looked
        if uid is not None:
            used.add(uid)
    return used


def allocate_id(used: Iterable[int]) -> int:
    """The lowest free VM uid; OutOfCapacity when the whole range is taken."""
    taken = set(used)
    free = next((uid for uid in vm_ids() if uid not in taken), None)
    if free is None:
        raise OutOfCapacity(f"all {VM_ID_COUNT - 1} VM uids are in use on this host")
    return free


@contextlib.contextmanager
def id_lock(directory: Path) -> Iterator[None]:
    """Serialise id allocation among the processes (task workers) that define VMs on this host.

    `directory` is the disks root, which every such process shares (and which already exists)."""
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def make_private(paths: Iterable[Path]) -> None:
    """Owner-only files: while a VM runs libvirt makes its uid the owner, and no other VM can read them."""
    for path in paths:
        path.chmod(0o600)


def private_boot_files(image: GuestImage, directory: Path) -> tuple[Path, Path]:
    """The VM's own copies of the image's kernel and initrd (0600, next to its disks).

    libvirt chowns a domain's kernel and initrd to the domain's uid for as long as it runs; on
    the image's own files that would hand the kernel every VM boots to one VM's QEMU.
    """
    copies = []
    for source in (image.kernel, image.initrd):
        target = directory / source.name
        if not target.exists():
            partial = target.with_name(target.name + ".partial")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(source, "rb") as src, open(fd, "wb") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
            os.replace(partial, target)
        copies.append(target)
    return copies[0], copies[1]


@dataclass(frozen=True)
class ConfinementState:
    """What the host check found: `active` only if every mechanism is in force."""

    active: bool
    summary: str
    problems: tuple[str, ...] = ()
    security_models: tuple[str, ...] = ()
    qemu_user: str = ""  # qemu.conf's user:group as libvirt reports it ("+999:+995")
    per_vm_ids: bool = False
    seccomp: bool = False
    cpu_limits: bool = False
    process_checked: bool = False  # the probe's QEMU process was inspected in /proc
    notes: tuple[str, ...] = field(default_factory=tuple)


def _capabilities(conn: libvirt.virConnect) -> tuple[tuple[str, ...], str]:
    root = ET.fromstring(conn.getCapabilities())  # noqa: S314 - libvirtd output
    models, qemu_user = [], ""
    for secmodel in root.findall("./host/secmodel"):
        model = secmodel.findtext("model") or ""
        models.append(model)
        for base in secmodel.findall("baselabel"):
            if model == "dac" and base.get("type") == "qemu":
                qemu_user = (base.text or "").strip()
    return tuple(models), qemu_user


def _process_status(name: str, pid_dir: Path) -> dict[str, str] | None:
    """The /proc status of domain `name`'s QEMU, if this process can see it (not from a container)."""
    try:
        pid = int((pid_dir / f"{name}.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, ValueError):
        return None
    if f"guest={name},".encode() not in cmdline:
        return None  # another pid namespace: the number names some other process here
    return dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)


def check_host(conn: libvirt.virConnect, pid_dir: Path = Path("/run/libvirt/qemu")) -> ConfinementState:
    """Prove confinement on this host by starting a paused, diskless probe domain with a VM's
    label and limits: libvirt accepts the label, QEMU gets the seccomp sandbox, the CPU quota is
    set, and (where /proc shows it) the process runs as the label's uid with no capabilities.
    The probe never runs guest code and is destroyed with the connection if we die (AUTODESTROY)."""
    problems: list[str] = []
    notes: list[str] = []
    models, qemu_user = _capabilities(conn)
    if "dac" not in models:
        problems.append("libvirt's DAC security driver is off: QEMU would run as root")
    if qemu_user in {"+0:+0", ""}:
        problems.append(
            f"qemu.conf runs QEMU as root ({qemu_user or 'no DAC base label'}): run scripts/setup-libvirt.sh"
        )
    probe = VMIdentity(vm_id_base(), vm_id_base(), Path("/nonexistent"), Path("/nonexistent"))
    limits = resource_limits(PROFILES["tiny"])
    name = PROBE_NAME_PREFIX + secrets.token_hex(4)
    xml = build_probe_xml(name, probe, limits)
    try:
        argv = conn.domainXMLToNative("qemu-argv", xml, 0)
    except libvirt.libvirtError as exc:
        argv = ""
        problems.append(f"libvirt cannot build a QEMU command line: {exc.get_error_message()}")
    sandbox = next((arg for arg in argv.split() if arg.startswith("on,") and "elevateprivileges" in arg), "")
    seccomp = "-sandbox" in argv.split() and all(deny in sandbox for deny in SANDBOX_DENIES)
    if argv and not seccomp:
        problems.append("QEMU's seccomp sandbox is off: set seccomp_sandbox = 1 in qemu.conf (setup-libvirt.sh)")
    per_vm_ids = cpu_limits = process_checked = False
    try:
        domain = conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED | libvirt.VIR_DOMAIN_START_AUTODESTROY)
    except libvirt.libvirtError as exc:
        problems.append(f"a confined QEMU does not start: {exc.get_error_message()}")
    else:
        try:
            per_vm_ids = dac_label_id(domain.XMLDesc(0)) == probe.uid
            if not per_vm_ids:
                problems.append("libvirt dropped the per-VM DAC label")
            try:
                params = domain.schedulerParameters()
                cpu_limits = params.get("global_quota") == limits.cpu_quota_us
            except libvirt.libvirtError as exc:
                notes.append(f"no cgroup CPU limits: {exc.get_error_message()}")
            if not cpu_limits:
                problems.append("the cgroup CPU quota is not applied (is the cgroup cpu controller mounted?)")
            status = _process_status(name, pid_dir)
            if status is not None:
                process_checked = True
                problems.extend(_process_problems(status, probe.uid))
            else:
                notes.append("QEMU's process is not visible here (another pid namespace): checked through libvirt")
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                domain.destroy()
    mechanisms = [
        f"per-VM uid/gid ({VM_ID_COUNT - 1} from {vm_id_base() + 1})" if per_vm_ids else "",
        "seccomp sandbox" if seccomp else "",
        "cgroup CPU quota" if cpu_limits else "",
        "no capabilities (checked in /proc)" if process_checked and not problems else "",
    ]
    active = not problems
    summary = ("confined: " if active else "NOT confined: ") + (
        ", ".join(m for m in mechanisms if m) if active else "; ".join(problems)
    )
    return ConfinementState(
        active, summary, tuple(problems), models, qemu_user, per_vm_ids, seccomp, cpu_limits, process_checked,
        tuple(notes),
    )  # fmt: skip


def _process_problems(status: dict[str, str], uid: int) -> list[str]:
    problems = []
    uids = {int(v) for v in status.get("Uid", "").split()} | {int(v) for v in status.get("Gid", "").split()}
    if uids != {uid}:
        problems.append(f"the probe's QEMU runs as uid/gid {sorted(uids)}, not {uid}")
    if status.get("Seccomp", "").strip() != "2":
        problems.append("the probe's QEMU has no seccomp filter")
    if int(status.get("CapEff", "0").strip() or "0", 16):
        problems.append("the probe's QEMU keeps capabilities")
    return problems
