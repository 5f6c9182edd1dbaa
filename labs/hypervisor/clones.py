"""Templates and clones: capture a prepared VM once, restore any number of independent copies.

A *template* is a running VM (booted, a lab's step 1 set up) saved with `virDomainSave` (RAM and
device state, an ~80 MiB save image) plus its disks, frozen read-only. A *clone* is a new VirtLab
VM restored from that save image: its own session id, domain name, uuid, per-VM uid:gid
(confinement.py), private kernel/initrd copies, and its own qcow2 overlay on every frozen disk.

Why save/restore with a patched header (measured on this 2-core TCG host, libvirt 9.0, QEMU 7.2;
see `../shared/notes/clone-probe.md` and `bench/clones.py`): a restore is ~1 s against ~8 s of CPU
for a cold boot, and all clones share the template's frozen disks in the page cache. libvirt
refuses to restore a save image as another domain (`virDomainRestoreFlags(dxml)` and
`virDomainSaveImageDefineXML` both reject a new `<uuid>`), so each clone gets its own copy of the
save image whose embedded domain XML names the clone (the copy is deleted once QEMU has read it).
The routes left out: an internal snapshot carried in a copied qcow2 and redefined with
`VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE` would copy the RAM state into every clone's disk for good
(+80 MiB each, and every later checkpoint of the clone is in the same file); QEMU's own `-incoming`
bypasses libvirt, which must own every VirtLab domain.

The save image's layout, and how a copy that names the clone is written: save_image.py. The
clone's XML itself is edited with ElementTree, never as a string.

After a restore every clone carries the template's clock and RNG state. Each clone's domain has a
fresh VM generation ID (`<genid>`): QEMU's vmgenid device tells the guest kernel (CONFIG_VMGENID)
it was cloned and the kernel reseeds its RNG at once; `fresh_guest_state` then sets the guest
clock (`guest-set-time`) and mixes host randomness into `/dev/urandom` before the VM is handed out.

Confinement: the frozen disks are root:root 0444 in a 0711 directory and every clone declares
them (and the image's base disk below them) with `<seclabel model='dac' relabel='no'/>`, so libvirt
never chowns them to a clone's uid: every clone's QEMU can read them, none can write them. Each
clone's overlays, kernel and initrd are 0600 in its own session directory, chowned by libvirt to
that clone's uid while it runs (the same as a booted VM), so no clone reads another's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import libvirt

from .disks import DiskPlan, create_disks, session_dir
from .domain_xml import VMIdentity
from .errors import GuestAgentTimeout, GuestAgentUnavailable, TemplateInUse, TemplateInvalid
from .guest_agent import GuestAgent
from .naming import METADATA_NS, domain_name
from .polling import Deadline, poll
from .save_image import SaveImage, read_save_image, write_save_image

# Templates live next to the sessions' disk directories, in one directory whose name is not a
# session id (so no reaper of session directories ever takes it for one).
TEMPLATES_DIR = "_templates"
MANIFEST = "template.json"
SAVE_IMAGE = "state.save"
_LOCK = ".lock"
# Host randomness written into a fresh clone's /dev/urandom (the kernel's pool is 256 bits).
RESEED_BYTES = 64
# Must match domain_xml's namespace so a clone's uuid derives from its session id like any VM's.
_UUID_NAMESPACE = uuid.UUID("0f6a3c1e-2b7d-5c4e-9a8f-76c1d2e3b4a5")


@dataclass(frozen=True)
class Template:
    """A captured template on this host: the save image and the frozen disks (by target)."""

    directory: Path
    profile: str
    image_hash: str
    disks: tuple[tuple[str, str], ...]  # (target, file name in `directory`)
    created_at: str
    labels: dict[str, str]

    @property
    def key(self) -> str:
        """The template's name (its directory's)."""
        return self.directory.name

    @property
    def save_image(self) -> Path:
        """The save image clones restore from."""
        return self.directory / SAVE_IMAGE

    def disk_path(self, target: str) -> Path:
        """The frozen disk of `target` (vda, vdb, ...)."""
        return self.directory / dict(self.disks)[target]


def templates_root(disks_root: Path) -> Path:
    """The directory holding every template of the host."""
    return disks_root / TEMPLATES_DIR


def make_templates_root(disks_root: Path) -> Path:
    """The templates directory, created if needed: 0711, so QEMU reaches the frozen disks by
    name without listing anything."""
    root = templates_root(disks_root)
    root.mkdir(mode=0o711, parents=True, exist_ok=True)
    root.chmod(0o711)
    return root


def load_template(directory: Path) -> Template:
    """A template from its directory; TemplateInvalid if it is not a complete one."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        disks = tuple((str(t), str(f)) for t, f in manifest["disks"])
        template = Template(
            directory, str(manifest["profile"]), str(manifest["image_hash"]), disks, str(manifest["created_at"]),
            {str(k): str(v) for k, v in dict(manifest.get("labels", {})).items()},
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TemplateInvalid(f"{directory}: no valid template manifest ({exc})") from exc
    for _target, name in disks:
        if "/" in name or not (directory / name).is_file():
            raise TemplateInvalid(f"{directory}: frozen disk {name!r} missing")
    if not template.save_image.is_file():
        raise TemplateInvalid(f"{directory}: no save image")
    return template


def list_templates(disks_root: Path) -> list[Template]:
    """Every complete template under the disks root (partial or broken ones are skipped)."""
    root = templates_root(disks_root)
    if not root.is_dir():
        return []
    found = []
    for directory in sorted(root.iterdir()):
        if directory.is_dir() and ".partial" not in directory.name:
            with contextlib.suppress(TemplateInvalid):
                found.append(load_template(directory))
    return found


@contextlib.contextmanager
def template_lock(disks_root: Path, key: str, exclusive: bool) -> Iterator[None]:
    """Clones being restored hold a template shared; removing it takes it exclusively."""
    root = make_templates_root(disks_root)
    fd = os.open(root / f"{_LOCK}-{key}", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def with_genid(domain_xml: str) -> str:
    """`domain_xml` with a VM generation ID device, so clones of this VM can tell the guest."""
    root = ET.fromstring(domain_xml)  # noqa: S314 - built by domain_xml.py
    if root.find("genid") is None:
        # libvirt wants <genid> right after <uuid>/<metadata>; it reorders on define anyway.
        root.insert(2, ET.Element("genid"))
    return ET.tostring(root, encoding="unicode")


def capture(
    conn: libvirt.virConnect, domain: libvirt.virDomain, source_dir: Path, directory: Path, profile: str,
    image_hash: str, labels: dict[str, str],
) -> Template:  # fmt: skip
    """Save running `domain` into a new template at `directory` and freeze its disks there.

    The domain ends shut off and undefined, its session directory (`source_dir`) removed. The
    template appears under its final name only once complete (built in `<name>.partial`)."""
    if directory.exists():
        raise TemplateInvalid(f"{directory} exists already")
    root = ET.fromstring(domain.XMLDesc(0))  # noqa: S314 - libvirtd output
    if root.find("genid") is None:
        raise TemplateInvalid(f"{domain.name()} has no <genid>: clones could not reseed their RNG")
    if domain.snapshotNum(0):
        raise TemplateInvalid(f"{domain.name()} has snapshots: every clone's disk would carry them")
    disks = _own_disks(root, source_dir)
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    directory.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    partial.mkdir(mode=0o711)
    try:
        domain.save(str(partial / SAVE_IMAGE))  # the domain stops; libvirt gives the disks back to root
        frozen = []
        for target, path in disks:
            name = f"{target}.qcow2"
            os.replace(path, partial / name)
            os.chown(partial / name, 0, 0)
            # World-readable, nobody's to write: every clone's QEMU reads it as a backing file.
            os.chmod(partial / name, 0o444)
            frozen.append((target, name))
        os.chmod(partial / SAVE_IMAGE, 0o600)  # read by libvirtd (root) only
        manifest = {
            "profile": profile, "image_hash": image_hash, "disks": frozen,
            "created_at": datetime.now(UTC).isoformat(), "labels": labels,
        }  # fmt: skip
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1))
        read_save_image(partial / SAVE_IMAGE)  # refuse a template no clone could come from
        os.replace(partial, directory)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            if domain.isActive():
                domain.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            domain.undefineFlags(
                libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            )
        shutil.rmtree(source_dir, ignore_errors=True)
    return load_template(directory)


def _own_disks(root: ET.Element, source_dir: Path) -> list[tuple[str, Path]]:
    """(target, file) of the domain's writable disks; all must live in its session directory."""
    disks = []
    for disk in root.findall("./devices/disk"):
        if disk.find("readonly") is not None:
            continue  # the image's shared tools disk
        target, source = disk.find("target"), disk.find("source")
        path = Path(source.get("file", "")) if source is not None else Path()
        if target is None or path.parent != source_dir:
            raise TemplateInvalid(f"disk {path} is not one of the session's own (in {source_dir})")
        disks.append((target.get("dev", ""), path))
    return disks


@dataclass(frozen=True)
class CloneFiles:
    """A clone's own files: its disk overlays (by target) and its kernel and initrd copies."""

    overlays: dict[str, Path]
    identity: VMIdentity


def plan_overlays(template: Template, disks_root: Path, session_id: str) -> list[DiskPlan]:
    """One qcow2 overlay per frozen disk, in the clone's session directory."""
    directory = session_dir(disks_root, session_id)
    return [DiskPlan(directory / name, target, 0, template.disk_path(target)) for target, name in template.disks]


def create_overlays(plans: list[DiskPlan]) -> None:
    """Create the overlays (owner-only: libvirt hands them to the clone's uid while it runs)."""
    create_disks(plans)
    for plan in plans:
        plan.path.chmod(0o600)


def clone_xml(saved_xml: str, template: Template, session_id: str, files: CloneFiles) -> str:
    """The template's domain XML made into the clone's: name, uuid, a fresh genid, metadata,
    DAC label, kernel/initrd copies, and overlays backed by the frozen disks (never relabelled)."""
    root = ET.fromstring(saved_xml)  # noqa: S314 - written by libvirtd into our own save image
    _set_text(root, "name", domain_name(session_id))
    _set_text(root, "uuid", str(uuid.uuid5(_UUID_NAMESPACE, session_id)))
    _set_text(root, "genid", str(uuid.uuid4()))
    tag = root.find(f"./metadata/{{{METADATA_NS}}}session")
    if tag is None:
        raise TemplateInvalid(f"{template.directory}: the saved domain carries no VirtLab metadata")
    _set_text(tag, f"{{{METADATA_NS}}}id", session_id)
    _set_text(tag, f"{{{METADATA_NS}}}created", datetime.now(UTC).isoformat())
    label = root.find("./seclabel[@model='dac']/label")
    if label is None:
        raise TemplateInvalid(f"{template.directory}: the saved domain has no per-VM DAC label")
    label.text = files.identity.label
    for element in root.findall("./seclabel[@model='dac']/imagelabel"):
        element.text = files.identity.label
    _set_text(root, "os/kernel", str(files.identity.kernel))
    _set_text(root, "os/initrd", str(files.identity.initrd))
    for disk in root.findall("./devices/disk"):
        if disk.find("readonly") is not None:
            continue
        target = disk.find("target")
        dev = target.get("dev", "") if target is not None else ""
        if dev not in files.overlays:
            raise TemplateInvalid(f"{template.directory}: the saved domain's disk {dev!r} is not in the template")
        _repoint_disk(disk, files.overlays[dev], template.disk_path(dev))
    return ET.tostring(root, encoding="unicode")


def _set_text(root: ET.Element, path: str, text: str) -> None:
    element = root.find(path)
    if element is None:
        raise TemplateInvalid(f"the saved domain XML has no <{path}>")
    element.text = text


def _repoint_disk(disk: ET.Element, overlay: Path, frozen: Path) -> None:
    """<source> becomes the clone's overlay; the frozen disk (with whatever chain it had below,
    e.g. the image's base disk) becomes its backing store, declared relabel='no' at every layer."""
    source = disk.find("source")
    if source is None:
        raise TemplateInvalid("a saved disk has no <source>")
    old_chain = disk.find("backingStore")
    index = list(disk).index(source)
    disk.remove(source)
    new_source = ET.Element("source", file=str(overlay))
    disk.insert(index, new_source)
    if old_chain is not None:
        disk.remove(old_chain)
    backing = ET.Element("backingStore", type="file")
    ET.SubElement(backing, "format", type="qcow2")
    frozen_source = ET.SubElement(backing, "source", file=str(frozen))
    ET.SubElement(frozen_source, "seclabel", model="dac", relabel="no")
    backing.append(_shared_chain(old_chain))
    disk.insert(index + 1, backing)


def _shared_chain(chain: ET.Element | None) -> ET.Element:
    """The saved disk's backing chain (the image's base disk, or nothing), every layer relabel='no'."""
    if chain is None or chain.find("source") is None:
        return ET.Element("backingStore")
    copy = ET.Element("backingStore", type=chain.get("type", "file"))
    fmt = chain.find("format")
    ET.SubElement(copy, "format", type=fmt.get("type", "qcow2") if fmt is not None else "qcow2")
    old_source = chain.find("source")
    source = ET.SubElement(copy, "source", file=old_source.get("file", "") if old_source is not None else "")
    ET.SubElement(source, "seclabel", model="dac", relabel="no")
    copy.append(_shared_chain(chain.find("backingStore")))
    return copy


def restore(
    conn: libvirt.virConnect, domain: libvirt.virDomain, template: Template, image: SaveImage, xml: str, scratch: Path
) -> None:
    """Restore the clone's defined `domain`, running, from a copy of the template's save image
    that embeds `xml` (the domain's own XML; written to `scratch`, deleted afterwards). On failure
    the domain is undefined again."""
    try:
        write_save_image(template.save_image, scratch, image, xml)
        conn.restoreFlags(str(scratch), None, libvirt.VIR_DOMAIN_SAVE_RUNNING)
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            if domain.isActive():
                domain.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        raise
    finally:
        scratch.unlink(missing_ok=True)


def fresh_guest_state(agent: GuestAgent, timeout_s: float) -> None:
    """What a restored clone needs before anyone uses it: the host's time (it kept the
    template's clock) and host randomness mixed into its RNG (its vmgenid reseed already made it
    diverge from its siblings; these bytes are unknown to every other guest).

    Retried until `timeout_s`: on a busy host libvirt may call the agent "not available for now"
    for a moment after the first ping answered (it marks the agent erroring on a slow reply)."""

    def refresh() -> bool:
        agent.command("guest-set-time", {"time": time.time_ns()})
        agent.write_file("/dev/urandom", secrets.token_bytes(RESEED_BYTES))
        return True

    deadline = Deadline(timeout_s)
    agent.wait_ready(timeout_s)
    if not poll(
        refresh, timeout_s=deadline.remaining(), interval_s=0.2, max_interval_s=2, retry_on=(GuestAgentUnavailable,)
    ):
        raise GuestAgentTimeout(f"a clone's clock and RNG could not be refreshed within {timeout_s}s")


def _backed_by(root: ET.Element, template: Template) -> bool:
    prefix = str(template.directory) + "/"
    sources = (s.get("file", "") for s in root.iterfind("./devices/disk//backingStore/source"))
    return any(path.startswith(prefix) for path in sources)


def users(conn: libvirt.virConnect, template: Template) -> list[str]:
    """Names of the domains (running or not) whose disks are backed by the template's files."""
    found = []
    for domain in conn.listAllDomains(0):
        try:
            root = ET.fromstring(domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))  # noqa: S314 - libvirtd output
        except (libvirt.libvirtError, ET.ParseError):
            continue  # undefined while we looked
        if _backed_by(root, template):
            found.append(str(domain.name()))
    return sorted(found)


def template_of(domain_xml: str, templates: list[Template]) -> Template | None:
    """The template a clone's disks are backed by (the one it was restored from), if any."""
    root = ET.fromstring(domain_xml)  # noqa: S314 - libvirtd output
    return next((t for t in templates if _backed_by(root, t)), None)


def remove(conn: libvirt.virConnect, disks_root: Path, template: Template) -> None:
    """Delete a template; TemplateInUse (nothing deleted) while any clone's disk is backed by it.

    Under the template's exclusive lock: a clone being restored holds it shared, so none can
    start from it between the check and the removal."""
    with template_lock(disks_root, template.key, exclusive=True):
        in_use = users(conn, template)
        if in_use:
            raise TemplateInUse(f"template {template.key} backs {len(in_use)} VM(s): {', '.join(in_use[:5])}")
        # Rename first: a half-deleted template is never taken for a complete one.
        doomed = template.directory.with_name(f"{template.key}.partial.{secrets.token_hex(4)}")
        os.replace(template.directory, doomed)
        shutil.rmtree(doomed)
        # Whoever waits on this lock now finds no template; a later restore makes a new lock file.
        (templates_root(disks_root) / f"{_LOCK}-{template.key}").unlink(missing_ok=True)


def remove_markers(disks_root: Path, key_prefix: str) -> None:
    """Delete the lock and request files (`.<kind>-<key>`) of keys starting with `key_prefix`:
    a deployment (or a test stack) that goes away leaves none behind."""
    root = templates_root(disks_root)
    if not key_prefix or not root.is_dir():
        return
    for marker in root.glob(".*-*"):
        if marker.is_file() and marker.name.split("-", 1)[1].startswith(key_prefix):
            marker.unlink(missing_ok=True)
