"""Build libvirt domain XML from a vetted profile with an XML library (never string formatting)."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from labs.profiles import EDU_QEMU_ARGS, Profile, kernel_cmdline

from .disks import DiskPlan
from .image import TOOLS_DISK_SERIAL, GuestImage
from .naming import METADATA_NS, METADATA_PREFIX, domain_name

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
AGENT_CHANNEL = "org.qemu.guest_agent.0"

# Domain UUIDs derive from the session id, so a retried create defines the same domain.
_UUID_NAMESPACE = uuid.UUID("0f6a3c1e-2b7d-5c4e-9a8f-76c1d2e3b4a5")

ET.register_namespace("qemu", QEMU_NS)
ET.register_namespace(METADATA_PREFIX, METADATA_NS)


@dataclass(frozen=True)
class VMIdentity:
    """Who a VM's QEMU runs as (libvirt's DAC driver, a static per-VM label) and the boot files it
    owns: its private copies of the image's kernel and initrd (see confinement.py)."""

    uid: int
    gid: int
    kernel: Path
    initrd: Path

    @property
    def label(self) -> str:
        """The DAC label in libvirt's numeric form (no user database lookup)."""
        return f"+{self.uid}:+{self.gid}"


@dataclass(frozen=True)
class ResourceLimits:
    """A VM's share of the host: CPU time per period over all its threads (cgroup cpu controller,
    CFS bandwidth), and disk I/O throttled by QEMU for all its disks together (one throttle group)."""

    cpu_period_us: int
    cpu_quota_us: int
    disk_bytes_per_s: int
    disk_iops: int
    disk_burst_bytes_per_s: int
    disk_burst_iops: int
    disk_burst_s: int


# One core's worth of CPU per vCPU: under TCG a vCPU thread alone can use a whole core, and QEMU's
# I/O threads then come out of the same budget instead of from other learners' VMs.
CPU_PERIOD_US = 100_000
# Disk I/O: measured in a `tiny` guest under TCG, unthrottled `dd` reaches ~120 MB/s and ~3,000
# 4 KiB IOPS (CPU-bound). Sustained use is held to about a quarter of that; bursts of 2 s may go
# faster than TCG ever does (up to 256 MiB), so a lab's mkfs or copy is not slowed. A flood gets
# 32 MiB/s and 1,000 IOPS.
DISK_BYTES_PER_S = 32 * 1024 * 1024
DISK_IOPS = 1000
DISK_BURST_BYTES_PER_S = 128 * 1024 * 1024
DISK_BURST_IOPS = 4000
DISK_BURST_S = 2
# QEMU throttle groups are per QEMU process: this name binds one VM's disks together, no others.
THROTTLE_GROUP = "virtlab-vm"


def resource_limits(profile: Profile) -> ResourceLimits:
    """The limits every VM of `profile` runs under."""
    return ResourceLimits(
        cpu_period_us=CPU_PERIOD_US,
        cpu_quota_us=CPU_PERIOD_US * profile.vcpus,
        disk_bytes_per_s=DISK_BYTES_PER_S,
        disk_iops=DISK_IOPS,
        disk_burst_bytes_per_s=DISK_BURST_BYTES_PER_S,
        disk_burst_iops=DISK_BURST_IOPS,
        disk_burst_s=DISK_BURST_S,
    )


@dataclass(frozen=True)
class DomainSpec:
    """Everything that determines a session's domain XML."""

    session_id: str
    profile: Profile
    image: GuestImage
    disks: tuple[DiskPlan, ...]
    accelerator: str  # "kvm" or "tcg"
    created_at: datetime
    # None only in tests of the XML itself: Hypervisor always allocates one (confinement.py).
    identity: VMIdentity | None = None


@dataclass(frozen=True)
class SessionTag:
    """The VirtLab metadata carried by a tagged domain."""

    session_id: str
    profile: str
    image_hash: str
    created_at: str


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def session_tag_element(spec: DomainSpec) -> ET.Element:
    """The <virtlab:session> element stored in the domain's <metadata>."""
    tag = ET.Element(f"{{{METADATA_NS}}}session")
    _sub(tag, f"{{{METADATA_NS}}}id", spec.session_id)
    _sub(tag, f"{{{METADATA_NS}}}profile", spec.profile.name)
    _sub(tag, f"{{{METADATA_NS}}}image", spec.image.image_hash)
    _sub(tag, f"{{{METADATA_NS}}}created", spec.created_at.isoformat())
    return tag


def parse_session_tag(xml_text: str) -> SessionTag | None:
    """Read a <virtlab:session> element (as returned by virDomainGetMetadata); None if invalid."""
    try:
        root = ET.fromstring(xml_text)  # noqa: S314 - written by libvirtd, not by users
    except ET.ParseError:
        return None
    # virDomainGetMetadata returns the element without its namespace; accept both forms.
    if _local(root.tag) != "session":
        return None

    def text(name: str) -> str:
        child = next((c for c in root if _local(c.tag) == name), None)
        return (child.text or "").strip() if child is not None else ""

    session_id = text("id")
    if not session_id:
        return None
    return SessionTag(session_id, text("profile"), text("image"), text("created"))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _os(domain: ET.Element, spec: DomainSpec) -> None:
    os_el = _sub(domain, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine=spec.profile.machine)
    # libvirt relabels a domain's kernel and initrd for its QEMU: each VM boots its own copies,
    # so the image's files are never handed to one VM's uid.
    identity = spec.identity
    _sub(os_el, "kernel", str(identity.kernel if identity else spec.image.kernel))
    _sub(os_el, "initrd", str(identity.initrd if identity else spec.image.initrd))
    _sub(os_el, "cmdline", kernel_cmdline(spec.profile))


def _cputune(domain: ET.Element, limits: ResourceLimits) -> None:
    # Only period and quota: libvirt skips them where the cpu controller is missing (the host
    # check reports that), whereas <shares> would fail the start. Equal default shares suit VMs.
    cputune = _sub(domain, "cputune")
    _sub(cputune, "global_period", str(limits.cpu_period_us))
    _sub(cputune, "global_quota", str(limits.cpu_quota_us))


def _iotune(disk_el: ET.Element, limits: ResourceLimits) -> None:
    iotune = _sub(disk_el, "iotune")
    _sub(iotune, "total_bytes_sec", str(limits.disk_bytes_per_s))
    _sub(iotune, "total_iops_sec", str(limits.disk_iops))
    _sub(iotune, "total_bytes_sec_max", str(limits.disk_burst_bytes_per_s))
    _sub(iotune, "total_iops_sec_max", str(limits.disk_burst_iops))
    _sub(iotune, "group_name", THROTTLE_GROUP)
    _sub(iotune, "total_bytes_sec_max_length", str(limits.disk_burst_s))
    _sub(iotune, "total_iops_sec_max_length", str(limits.disk_burst_s))


def _shared_source(disk_el: ET.Element, path: Path) -> ET.Element:
    """A <source> for a file every VM reads: libvirt must never chown it to one VM's uid (that
    VM's QEMU could then make it writable); it stays root-owned and world-readable."""
    source = _sub(disk_el, "source", file=str(path))
    _sub(source, "seclabel", model="dac", relabel="no")
    return source


def _seclabel(domain: ET.Element, identity: VMIdentity) -> None:
    # libvirt's DAC driver: QEMU runs as this uid:gid (no supplementary groups) and libvirt chowns
    # the VM's own files to it while it runs, restoring the owner afterwards (remember_owner).
    seclabel = _sub(domain, "seclabel", type="static", model="dac", relabel="yes")
    _sub(seclabel, "label", identity.label)


def _features(domain: ET.Element, spec: DomainSpec) -> None:
    features = _sub(domain, "features")
    _sub(features, "acpi")
    if spec.accelerator == "tcg":
        tcg = _sub(features, "tcg")
        _sub(tcg, "tb-cache", str(spec.profile.tcg_tb_cache_mib), unit="MiB")


def _tools_disk(devices: ET.Element, spec: DomainSpec, limits: ResourceLimits) -> None:
    # The image's tools (qemu-img, kmod, util-linux, lab programs) as one read-only squashfs shared
    # by every VM: the guest finds it by serial. Target vdz sorts it after the profile's disks, so it
    # gets the last PCI slot and the guest names it last (labs rely on vda/vdb/vdc). Being read-only
    # it is left out of snapshots (snapshot='no'): reverting never needs it.
    disk_el = _sub(devices, "disk", type="file", device="disk", snapshot="no")
    _sub(disk_el, "driver", name="qemu", type="raw")
    _shared_source(disk_el, spec.image.tools)
    _sub(disk_el, "target", dev="vdz", bus="virtio")
    _iotune(disk_el, limits)
    _sub(disk_el, "readonly")
    _sub(disk_el, "serial", TOOLS_DISK_SERIAL)


def _session_disk(devices: ET.Element, disk: DiskPlan, limits: ResourceLimits) -> None:
    disk_el = _sub(devices, "disk", type="file", device="disk")
    _sub(disk_el, "driver", name="qemu", type="qcow2", discard="unmap")
    _sub(disk_el, "source", file=str(disk.path))
    if disk.backing is not None:
        # The image's base disk, declared here so that it carries relabel='no' (libvirt would
        # otherwise chown every read-only layer of the chain to this VM's uid).
        backing = _sub(disk_el, "backingStore", type="file")
        _sub(backing, "format", type="qcow2")
        _shared_source(backing, disk.backing)
        _sub(backing, "backingStore")
    _sub(disk_el, "target", dev=disk.target, bus="virtio")
    _iotune(disk_el, limits)


def _devices(domain: ET.Element, spec: DomainSpec) -> None:
    limits = resource_limits(spec.profile)
    devices = _sub(domain, "devices")
    for disk in spec.disks:
        _session_disk(devices, disk, limits)
    _tools_disk(devices, spec, limits)
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    # libvirt picks the unix socket path itself (under its own per-domain directory).
    channel = _sub(devices, "channel", type="unix")
    _sub(channel, "target", type="virtio", name=AGENT_CHANNEL)
    _sub(devices, "controller", type="usb", model="none")
    if spec.profile.intel_iommu:
        _sub(devices, "iommu", model="intel")
    # Entropy from the host: without it getrandom() blocks under TCG (mkfs.ext4 took 4.2 s, not 0.3 s).
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    # No network interface: guests are offline by default (hostile under TCG).
    # The balloon is never inflated: it is there for free page reporting, which hands pages the
    # guest frees (its initrd copy, init sections, finished processes) back to the host, so they
    # leave QEMU's RSS (measured: -17 MiB for an idle `tiny` VM; see README).
    _sub(devices, "memballoon", model="virtio", freePageReporting="on")


def build_domain_xml(spec: DomainSpec) -> str:
    """The complete domain XML for `spec` as a string, ready for virDomainDefineXML."""
    domain_type = "kvm" if spec.accelerator == "kvm" else "qemu"
    domain = ET.Element("domain", {"type": domain_type})
    _sub(domain, "name", domain_name(spec.session_id))
    _sub(domain, "uuid", str(uuid.uuid5(_UUID_NAMESPACE, spec.session_id)))
    metadata = _sub(domain, "metadata")
    metadata.append(session_tag_element(spec))
    _sub(domain, "memory", str(spec.profile.memory_mib), unit="MiB")
    _sub(domain, "vcpu", str(spec.profile.vcpus))
    _cputune(domain, resource_limits(spec.profile))
    _os(domain, spec)
    _features(domain, spec)
    if spec.accelerator == "kvm":
        _sub(domain, "cpu", mode="host-model")
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")
    _devices(domain, spec)
    if spec.identity is not None:
        _seclabel(domain, spec.identity)
    if spec.profile.edu_device:
        commandline = _sub(domain, f"{{{QEMU_NS}}}commandline")
        for arg in EDU_QEMU_ARGS:
            _sub(commandline, f"{{{QEMU_NS}}}arg", value=arg)
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode")


def build_probe_xml(name: str, identity: VMIdentity, limits: ResourceLimits) -> str:
    """A diskless, kernel-less domain started paused by the host check (confinement.py): it runs
    QEMU with the same label, sandbox and CPU limits as a VM, and never executes guest code."""
    domain = ET.Element("domain", {"type": "qemu"})
    _sub(domain, "name", name)
    _sub(domain, "memory", "16", unit="MiB")
    _sub(domain, "vcpu", "1")
    _cputune(domain, limits)
    os_el = _sub(domain, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    devices = _sub(domain, "devices")
    _sub(devices, "controller", type="usb", model="none")
    _sub(devices, "memballoon", model="none")
    _seclabel(domain, identity)
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode")
