"""Domain XML generation: schema-valid for every profile, tagged, and free of user input."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

from labs.hypervisor.disks import plan_disks
from labs.hypervisor.domain_xml import (
    QEMU_NS,
    DomainSpec,
    VMIdentity,
    build_domain_xml,
    build_probe_xml,
    parse_session_tag,
    resource_limits,
)
from labs.hypervisor.errors import ImageInvalid
from labs.hypervisor.image import load_image
from labs.hypervisor.naming import METADATA_NS, check_session_id, domain_name, session_of
from labs.profiles import PROFILES, get_profile

from .conftest import parse_xml, validate_domain_xml

DISKS = Path("/var/lib/virtlab/disks")


IDENTITY = VMIdentity(700000042, 700000042, DISKS / "s-123" / "bzImage", DISKS / "s-123" / "initrd.img")


def spec_for(profile_name: str, image_dir: Path, accelerator: str = "tcg", base: Path | None = None) -> DomainSpec:
    profile = get_profile(profile_name)
    disks = tuple(plan_disks(DISKS, "s-123", profile, base))
    created = datetime(2026, 1, 2, tzinfo=UTC)
    return DomainSpec("s-123", profile, load_image(image_dir), disks, accelerator, created, IDENTITY)


def child(parent: ET.Element, path: str) -> ET.Element:
    """The element at `path`; the test fails, naming the path, if there is none."""
    found = parent.find(path)
    assert found is not None, f"no {path} under <{parent.tag}>"
    return found


def text_at(parent: ET.Element, path: str) -> str:
    """The text of the element at `path` ("" if it is empty)."""
    return child(parent, path).text or ""


@pytest.mark.parametrize("profile_name", sorted(PROFILES))
@pytest.mark.parametrize("accelerator", ["tcg", "kvm"])
def test_every_profile_produces_schema_valid_xml(
    profile_name: str, accelerator: str, guest_image: Path, tmp_path: Path
) -> None:
    xml = build_domain_xml(spec_for(profile_name, guest_image, accelerator))
    validate_domain_xml(xml, tmp_path)
    root = parse_xml(xml)
    assert root.get("type") == ("kvm" if accelerator == "kvm" else "qemu")
    assert root.findtext("name") == "virtlab-s-123"
    balloon = root.find("./devices/memballoon")
    assert balloon is not None
    assert (balloon.get("model"), balloon.get("freePageReporting")) == ("virtio", "on")
    assert root.find("./devices/interface") is None, "guests get no network"
    assert child(root, "./devices/channel/target").get("name") == "org.qemu.guest_agent.0"
    assert next(d.get("dev") for d in root.findall("./devices/disk/target")) == "vda"
    tb_cache = root.find("./features/tcg/tb-cache")
    assert (tb_cache is not None) == (accelerator == "tcg")


def test_vfio_profile_has_iommu_and_only_the_vetted_edu_args(guest_image: Path) -> None:
    root = parse_xml(build_domain_xml(spec_for("vfio", guest_image)))
    assert child(root, "./os/type").get("machine") == "q35"
    assert child(root, "./devices/iommu").get("model") == "intel"
    assert "intel_iommu=on" in text_at(root, "./os/cmdline")
    args = [a.get("value") for a in root.findall(f"./{{{QEMU_NS}}}commandline/{{{QEMU_NS}}}arg")]
    assert args == ["-device", "edu,bus=pcie.0,addr=0x10"]
    tiny = parse_xml(build_domain_xml(spec_for("tiny", guest_image)))
    assert tiny.find(f"./{{{QEMU_NS}}}commandline") is None


def test_storage_profile_has_scratch_and_two_data_disks(guest_image: Path) -> None:
    root = parse_xml(build_domain_xml(spec_for("storage", guest_image)))
    sources = [d.get("file") for d in root.findall("./devices/disk/source")]
    session_disks = [str(DISKS / "s-123" / n) for n in ("scratch.qcow2", "data1.qcow2", "data2.qcow2")]
    assert sources == [*session_disks, str(guest_image.resolve() / "tools.img")]
    assert [d.get("dev") for d in root.findall("./devices/disk/target")] == ["vda", "vdb", "vdc", "vdz"]


def test_tools_disk_is_shared_read_only_and_left_out_of_snapshots(guest_image: Path) -> None:
    root = parse_xml(build_domain_xml(spec_for("tiny", guest_image)))
    tools = root.findall("./devices/disk")[-1]
    assert child(tools, "source").get("file") == str(guest_image.resolve() / "tools.img")
    assert tools.find("readonly") is not None
    assert tools.get("snapshot") == "no"
    assert (child(tools, "driver").get("type"), tools.findtext("serial")) == ("raw", "virtlab-tools")


def test_metadata_carries_session_profile_image_and_time(guest_image: Path) -> None:
    root = parse_xml(build_domain_xml(spec_for("tiny", guest_image)))
    session = root.find(f"./metadata/{{{METADATA_NS}}}session")
    assert session is not None
    tag = parse_session_tag(ET.tostring(session, encoding="unicode"))
    assert tag is not None
    assert (tag.session_id, tag.profile) == ("s-123", "tiny")
    assert tag.image_hash == load_image(guest_image).image_hash
    assert tag.created_at.startswith("2026-01-02T00:00:00")


@pytest.mark.parametrize("bad", ["", "UPPER", "a/b", "../etc", "x" * 64, "a b", "a;rm", "-lead"])
def test_unsafe_session_ids_never_reach_names_or_paths(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid session id"):
        check_session_id(bad)
    with pytest.raises(ValueError, match="invalid session id"):
        plan_disks(DISKS, bad, get_profile("tiny"))


def test_domain_names_round_trip_and_foreign_names_are_not_sessions() -> None:
    assert session_of(domain_name("abc-1")) == "abc-1"
    assert session_of("debian12") is None
    assert session_of("virtlab-Bad/Name") is None


def test_unknown_profile_names_the_valid_choices() -> None:
    with pytest.raises(KeyError, match="tiny"):
        get_profile("gpu-passthrough")


def test_the_kernel_is_an_operator_choice(guest_image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_image(guest_image).kernel.name == "bzImage"
    monkeypatch.setenv("VIRTLAB_GUEST_KERNEL", "vmlinux")
    assert load_image(guest_image).kernel.name == "vmlinux"
    monkeypatch.setenv("VIRTLAB_GUEST_KERNEL", "../etc/passwd")
    with pytest.raises(ImageInvalid, match="choose one of bzImage, vmlinux"):
        load_image(guest_image)


@pytest.mark.parametrize("profile_name", sorted(PROFILES))
def test_qemu_runs_as_the_vms_own_uid_and_boots_its_own_kernel_copy(profile_name: str, guest_image: Path) -> None:
    root = parse_xml(build_domain_xml(spec_for(profile_name, guest_image)))
    (seclabel,) = root.findall("./seclabel")
    assert (seclabel.get("type"), seclabel.get("model"), seclabel.get("relabel")) == ("static", "dac", "yes")
    assert seclabel.findtext("label") == "+700000042:+700000042"
    # libvirt relabels kernel and initrd: they are the session's copies, never the image's files.
    assert text_at(root, "./os/kernel") == str(DISKS / "s-123" / "bzImage")
    assert text_at(root, "./os/initrd") == str(DISKS / "s-123" / "initrd.img")


def test_shared_read_only_files_are_never_relabelled(guest_image: Path, tmp_path: Path) -> None:
    base = guest_image / "disk.qcow2"
    xml = build_domain_xml(spec_for("storage", guest_image, base=base))
    validate_domain_xml(xml, tmp_path)
    root = parse_xml(xml)
    tools = root.findall("./devices/disk")[-1]
    assert (child(tools, "source/seclabel").get("model"), child(tools, "source/seclabel").get("relabel")) == (
        "dac",
        "no",
    )
    scratch = root.findall("./devices/disk")[0]
    backing = child(scratch, "backingStore")
    assert child(backing, "source").get("file") == str(base)
    assert child(backing, "source/seclabel").get("relabel") == "no"
    assert child(backing, "backingStore") is not None  # the chain ends there
    # The session's own disks are relabelled (to the VM's uid): no per-disk override.
    assert all(d.find("source/seclabel") is None for d in root.findall("./devices/disk")[:-1])


@pytest.mark.parametrize("profile_name", sorted(PROFILES))
def test_every_vm_has_a_cpu_quota_and_throttled_disks(profile_name: str, guest_image: Path) -> None:
    profile = get_profile(profile_name)
    limits = resource_limits(profile)
    root = parse_xml(build_domain_xml(spec_for(profile_name, guest_image)))
    assert text_at(root, "./cputune/global_period") == "100000"
    assert int(text_at(root, "./cputune/global_quota")) == 100000 * profile.vcpus  # one core per vCPU
    disks = root.findall("./devices/disk")
    assert len(disks) == profile.disk_count + 1
    for disk in disks:
        assert int(text_at(disk, "iotune/total_bytes_sec")) == limits.disk_bytes_per_s
        assert int(text_at(disk, "iotune/total_iops_sec")) == limits.disk_iops
        assert text_at(disk, "iotune/group_name") == "virtlab-vm"  # one budget for all of the VM's disks
    assert limits.disk_bytes_per_s <= 64 * 1024 * 1024
    assert limits.disk_burst_bytes_per_s * limits.disk_burst_s <= 512 * 1024 * 1024


def test_the_host_checks_probe_is_schema_valid_and_never_boots_anything(tmp_path: Path) -> None:
    xml = build_probe_xml("virtlab-confinement-probe-1", IDENTITY, resource_limits(get_profile("tiny")))
    validate_domain_xml(xml, tmp_path)
    root = parse_xml(xml)
    assert root.find("./os/kernel") is None
    assert root.find("./devices/disk") is None
    assert child(root, "./seclabel").findtext("label") == "+700000042:+700000042"
