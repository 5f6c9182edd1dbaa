"""Creation, teardown, reaping and error mapping against the real libvirtd."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from labs.hypervisor import (
    Console,
    ConsoleClosed,
    DomainMissing,
    HostUnreachable,
    Hypervisor,
    HypervisorError,
    ImageInvalid,
    OutOfMemory,
    Profile,
    SnapshotMissing,
)
from labs.hypervisor.disks import remove_session_disks, session_dir

from .conftest import BOOT_TIMEOUT_S, new_session_id

pytestmark = [pytest.mark.vm, pytest.mark.slow]


@pytest.fixture
def untagged_domains(hv: Hypervisor) -> Iterator[list[str]]:
    """Two domains VirtLab did not create: one even uses the virtlab- name prefix."""
    names = [f"virtlab-{new_session_id()}", f"foreign-{new_session_id()}"]
    for name in names:
        domain = ET.Element("domain", type="qemu")
        ET.SubElement(domain, "name").text = name
        ET.SubElement(domain, "memory", unit="MiB").text = "32"
        os_el = ET.SubElement(domain, "os")
        ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
        hv.conn.defineXML(ET.tostring(domain, encoding="unicode"))
    yield names
    for name in names:
        with contextlib.suppress(libvirt.libvirtError):
            hv.conn.lookupByName(name).undefine()


def test_missing_domain_raises_domain_missing(hv: Hypervisor) -> None:
    with pytest.raises(DomainMissing):
        hv.vm("test-never-created")


def test_untagged_domain_is_not_a_virtlab_vm(hv: Hypervisor, untagged_domains: list[str]) -> None:
    session_id = untagged_domains[0].removeprefix("virtlab-")
    with pytest.raises(DomainMissing, match="no VirtLab tag"):
        hv.vm(session_id)
    assert session_id not in {d.session_id for d in hv.list_tagged()}


def test_unreachable_host_raises_host_unreachable() -> None:
    with pytest.raises(HostUnreachable), Hypervisor.connect("qemu+unix:///system?socket=/nonexistent/sock"):
        pass


def test_destroy_removes_domain_snapshots_and_disks_and_reap_spares_untagged(
    hv: Hypervisor, guest_image: Path, untagged_domains: list[str]
) -> None:
    doomed = hv.create_vm(new_session_id(), "tiny", guest_image)
    kept = hv.create_vm(new_session_id(), "tiny", guest_image)
    try:
        doomed.wait_ready(BOOT_TIMEOUT_S)
        doomed.snapshot("s1")
        with pytest.raises(SnapshotMissing):
            doomed.revert("no-such-snapshot")
        assert session_dir(hv.disks_root, doomed.session_id).is_dir()

        # Reap everything of ours except `kept`; other sessions on this host are left alone.
        others = {d.session_id for d in hv.list_tagged()} - {doomed.session_id, kept.session_id}
        others |= {p.name for p in hv.disks_root.iterdir()} - {doomed.session_id, kept.session_id}
        # grace 0: our VMs are seconds old (another suite's VM born this instant would be at risk).
        reaped = hv.reap(keep_session_ids=others | {kept.session_id}, grace_s=0)

        assert doomed.session_id in reaped
        assert kept.session_id not in reaped
        assert doomed.state() == "missing"
        with pytest.raises(DomainMissing):
            hv.vm(doomed.session_id)
        assert not session_dir(hv.disks_root, doomed.session_id).exists()
        assert hv.vm(kept.session_id).is_running()
        for name in untagged_domains:
            hv.conn.lookupByName(name)  # still defined: reap never touches untagged domains
        doomed.destroy()  # idempotent
    finally:
        kept.destroy()
        doomed.destroy()
    tagged = {d.session_id for d in hv.list_tagged()}
    assert not {doomed.session_id, kept.session_id} & tagged
    assert not session_dir(hv.disks_root, kept.session_id).exists()
    names = subprocess.run(
        ["virsh", "-c", "qemu:///system", "list", "--all", "--name"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert f"virtlab-{kept.session_id}" not in names


def test_shutdown_stops_the_guest_and_create_vm_starts_it_again(hv: Hypervisor, guest_image: Path) -> None:
    vm = hv.create_vm(new_session_id(), "tiny", guest_image)
    try:
        vm.wait_ready(BOOT_TIMEOUT_S)
        vm.exec("echo persisted | dd of=/dev/vda conv=fsync 2>/dev/null")
        assert vm.shutdown(timeout_s=30)
        assert vm.state() == "shutoff"
        again = hv.create_vm(vm.session_id, "tiny", guest_image)
        again.wait_ready(BOOT_TIMEOUT_S)
        assert again.exec("head -c10 /dev/vda").text == "persisted\n"  # same overlay disk
    finally:
        vm.destroy()
    assert vm.state() == "missing"


def test_profile_larger_than_free_memory_is_refused_before_anything_is_created(
    hv: Hypervisor, guest_image: Path
) -> None:
    session_id = new_session_id()
    free = hv.capacity().free_mem_mib
    huge = Profile(name="huge", machine="pc", memory_mib=free + 1)
    with pytest.raises(OutOfMemory, match="needs"):
        hv.create_vm(session_id, huge, guest_image)
    with pytest.raises(DomainMissing):
        hv.vm(session_id)
    assert not session_dir(hv.disks_root, session_id).exists()


def test_incomplete_image_directory_is_rejected(hv: Hypervisor, tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(ImageInvalid, match=r"needs bzImage, initrd\.img and tools\.img"):
        hv.create_vm(new_session_id(), "tiny", tmp_path)


def _use_connection_in_child(hv: Hypervisor, result: multiprocessing.SimpleQueue[str]) -> None:
    try:
        hv.vm("test-after-fork")
        result.put("used")
    except HypervisorError as exc:
        result.put(str(exc))


def test_connection_is_never_used_across_fork(hv: Hypervisor) -> None:
    context = multiprocessing.get_context("fork")
    result: multiprocessing.SimpleQueue[str] = context.SimpleQueue()
    child = context.Process(target=_use_connection_in_child, args=(hv, result))
    child.start()
    child.join(30)
    assert "after fork" in result.get()
    with pytest.raises(DomainMissing):  # the parent's connection still works
        hv.vm("test-after-fork")


def _read_for(console: Console, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        console.read(timeout=0.5)


def test_console_reports_closed_when_the_vm_goes_away(hv: Hypervisor, guest_image: Path) -> None:
    vm = hv.create_vm(new_session_id(), "tiny", guest_image)
    try:
        console = vm.console(wake=False)
        vm.destroy()
        with pytest.raises(ConsoleClosed):
            _read_for(console, seconds=30)
        assert console.closed
        console.close()
    finally:
        vm.destroy()


def test_reap_removes_old_orphans_but_spares_fresh_ones(hv: Hypervisor, guest_image: Path) -> None:
    old, fresh = new_session_id(), new_session_id()
    for session_id in (old, fresh):
        session_dir(hv.disks_root, session_id).mkdir(mode=0o711)
        (session_dir(hv.disks_root, session_id) / "scratch.qcow2").write_bytes(b"")
    aged = time.time() - 3600
    os.utime(session_dir(hv.disks_root, old), (aged, aged))
    try:
        others = {d.session_id for d in hv.list_tagged()} | {p.name for p in hv.disks_root.iterdir()}
        reaped = hv.reap(keep_session_ids=others - {old, fresh})
        assert old in reaped
        assert not session_dir(hv.disks_root, old).exists()
        assert fresh not in reaped  # may belong to a create_vm in flight
        assert session_dir(hv.disks_root, fresh).is_dir()
        young = hv.create_vm(new_session_id(), "tiny", guest_image)
        try:
            assert young.session_id not in hv.reap(keep_session_ids=others - {old, fresh})
            assert young.is_running()
        finally:
            young.destroy()
    finally:
        remove_session_disks(hv.disks_root, old)
        remove_session_disks(hv.disks_root, fresh)


def test_a_vm_whose_files_cannot_be_made_fails_as_a_hypervisor_error_and_leaves_nothing(
    hv: Hypervisor, guest_image: Path, tmp_path: Path
) -> None:
    """A disk directory that cannot be written (here: a file stands where it goes) fails that VM
    the way callers handle (a HypervisorError), never as a bare OSError that ends their task."""
    blocked = tmp_path / "disks"
    blocked.write_text("not a directory")
    session_id = new_session_id()
    with pytest.raises(HypervisorError, match=session_id) as failed:
        Hypervisor(hv.conn, blocked).create_vm(session_id, "tiny", guest_image)
    assert isinstance(failed.value.__cause__, OSError)
    with pytest.raises(DomainMissing):
        hv.vm(session_id)
