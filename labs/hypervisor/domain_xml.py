"""Build libvirt domain XML from a vetted profile with an XML library (never string formatting)."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime

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
class DomainSpec:
    """Everything that determines a session's domain XML."""

    session_id: str
    profile: Profile
    image: GuestImage
    disks: tuple[DiskPlan, ...]
    accelerator: str  # "kvm" or "tcg"
    created_at: datetime


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
    _sub(os_el, "kernel", str(spec.image.kernel))
    _sub(os_el, "initrd", str(spec.image.initrd))
    _sub(os_el, "cmdline", kernel_cmdline(spec.profile))


def _features(domain: ET.Element, spec: DomainSpec) -> None:
    features = _sub(domain, "features")
    _sub(features, "acpi")
    if spec.accelerator == "tcg":
        tcg = _sub(features, "tcg")
        _sub(tcg, "tb-cache", str(spec.profile.tcg_tb_cache_mib), unit="MiB")


def _tools_disk(devices: ET.Element, spec: DomainSpec) -> None:
    # The image's tools (qemu-img, kmod, util-linux, lab programs) as one read-only squashfs shared
    # by every VM: the guest finds it by serial. Target vdz sorts it after the profile's disks, so it
    # gets the last PCI slot and the guest names it last (labs rely on vda/vdb/vdc). Being read-only
    # it is left out of snapshots (snapshot='no'): reverting never needs it.
    disk_el = _sub(devices, "disk", type="file", device="disk", snapshot="no")
    _sub(disk_el, "driver", name="qemu", type="raw")
    _sub(disk_el, "source", file=str(spec.image.tools))
    _sub(disk_el, "target", dev="vdz", bus="virtio")
    _sub(disk_el, "readonly")
    _sub(disk_el, "serial", TOOLS_DISK_SERIAL)


def _devices(domain: ET.Element, spec: DomainSpec) -> None:
    devices = _sub(domain, "devices")
    for disk in spec.disks:
        disk_el = _sub(devices, "disk", type="file", device="disk")
        _sub(disk_el, "driver", name="qemu", type="qcow2", discard="unmap")
        _sub(disk_el, "source", file=str(disk.path))
        _sub(disk_el, "target", dev=disk.target, bus="virtio")
    _tools_disk(devices, spec)
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
    _os(domain, spec)
    _features(domain, spec)
    if spec.accelerator == "kvm":
        _sub(domain, "cpu", mode="host-model")
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")
    _devices(domain, spec)
    if spec.profile.edu_device:
        commandline = _sub(domain, f"{{{QEMU_NS}}}commandline")
        for arg in EDU_QEMU_ARGS:
            _sub(commandline, f"{{{QEMU_NS}}}arg", value=arg)
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode")
