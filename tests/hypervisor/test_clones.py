"""Templates and clones on real libvirt + QEMU: one template, two clones restored from it.

One template VM boots per module (the only cold boot); both clones come from its save image.
"""

from __future__ import annotations

import stat
import struct
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from labs.hypervisor import VM, Hypervisor, save_image
from labs.hypervisor import clones as cl
from labs.hypervisor.disks import session_dir
from labs.hypervisor.errors import TemplateInUse, TemplateInvalid
from tests.hypervisor.conftest import BOOT_TIMEOUT_S, new_session_id, parse_xml
from tests.hypervisor.test_confinement import ids_of, open_as, qemu_pid

pytestmark = [pytest.mark.vm, pytest.mark.slow]
TEMPLATE_MARK = "made-in-the-template"


@pytest.fixture(scope="module")
def template(hv: Hypervisor, guest_image: Path) -> Iterator[cl.Template]:
    vm = hv.create_vm(new_session_id(), "tiny", guest_image, clonable=True)
    try:
        vm.wait_ready(BOOT_TIMEOUT_S)
        # State the clones must inherit: a file on the disk and a process's output in RAM (tmpfs).
        assert vm.exec(f"echo {TEMPLATE_MARK} > /tmp/mark").ok
        directory = cl.templates_root(hv.disks_root) / f"test-{uuid.uuid4().hex[:8]}"
        captured = hv.capture_template(vm, directory, {"source": vm.session_id})
    except BaseException:
        vm.destroy()
        raise
    yield captured
    for user in hv.template_users(captured):
        hv.vm(user.removeprefix("virtlab-")).destroy()
    hv.remove_template(captured)


@pytest.fixture(scope="module")
def two_clones(hv: Hypervisor, template: cl.Template, guest_image: Path) -> Iterator[tuple[VM, VM]]:
    made: list[VM] = []
    try:
        for _ in range(2):
            made.append(hv.restore_clone(template, new_session_id(), guest_image, BOOT_TIMEOUT_S))
        yield made[0], made[1]
    finally:
        for vm in made:
            vm.destroy()


def test_capturing_leaves_the_template_vm_gone_and_its_disks_frozen(hv: Hypervisor, template: cl.Template) -> None:
    source = template.labels["source"]
    assert source not in {d.session_id for d in hv.list_tagged()}
    assert not session_dir(hv.disks_root, source).exists()
    assert stat.S_IMODE(template.directory.stat().st_mode) == 0o711  # reachable by name, not listable
    for _target, name in template.disks:
        info = (template.directory / name).stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o444)
    info = template.save_image.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600)  # RAM of the template: libvirtd's only
    image = save_image.read_save_image(template.save_image)
    assert "<genid>" in image.xml
    assert image.data_len > len(image.xml)


def test_clones_are_distinct_vms_with_the_templates_state(hv: Hypervisor, two_clones: tuple[VM, VM]) -> None:
    a, b = two_clones
    xmls = [parse_xml(vm.xml()) for vm in two_clones]
    assert len({x.findtext("name") for x in xmls}) == len({x.findtext("uuid") for x in xmls}) == 2
    assert len({x.findtext("genid") for x in xmls}) == 2  # each guest kernel is told it is a new copy
    assert ids_of(qemu_pid(a)) != ids_of(qemu_pid(b))
    assert {p for _t, p in a.disk_targets()}.isdisjoint(p for _t, p in b.disk_targets())
    for vm in two_clones:
        assert vm.state() == "running"
        assert vm.exec("cat /tmp/mark").stdout.decode().strip() == TEMPLATE_MARK  # RAM came from the template
        for _target, path in vm.disk_targets():
            assert Path(path).parent == session_dir(hv.disks_root, vm.session_id)


def test_each_clone_gets_the_hosts_time_and_its_own_randomness(two_clones: tuple[VM, VM]) -> None:
    for vm in two_clones:
        guest_now = int(vm.exec("date +%s").stdout)
        assert abs(guest_now - time.time()) < 5
    # With the template's RNG state and no reseed both would print the same bytes.
    outputs = {vm.exec("head -c 32 /dev/urandom | od -An -tx1").stdout for vm in two_clones}
    assert len(outputs) == 2


def test_writes_in_one_clone_stay_there(hv: Hypervisor, template: cl.Template, two_clones: tuple[VM, VM]) -> None:
    a, b = two_clones
    frozen = template.disk_path("vda")
    before = frozen.read_bytes()
    assert a.exec("printf clone-a | dd of=/dev/vda bs=512 seek=100 conv=fsync 2>/dev/null").ok
    assert a.exec("dd if=/dev/vda bs=512 skip=100 count=1 2>/dev/null | head -c 7").stdout == b"clone-a"
    assert b.exec("dd if=/dev/vda bs=512 skip=100 count=1 2>/dev/null | head -c 7").stdout != b"clone-a"
    assert frozen.read_bytes() == before


def test_a_clones_qemu_reads_the_frozen_disks_but_writes_none_and_reads_no_sibling(
    hv: Hypervisor, template: cl.Template, two_clones: tuple[VM, VM]
) -> None:
    a, b = two_clones
    pid_a = qemu_pid(a)
    for _target, name in template.disks:
        frozen = template.directory / name
        assert open_as(pid_a, frozen).returncode == 0
        assert open_as(pid_a, frozen, "w").returncode != 0
        assert frozen.stat().st_uid == 0  # libvirt never handed it to a clone (relabel='no')
    assert open_as(pid_a, template.save_image).returncode != 0
    uid_b, _ = ids_of(qemu_pid(b))
    for _target, path in b.disk_targets():
        assert Path(path).stat().st_uid == uid_b
        denied = open_as(pid_a, Path(path))
        assert denied.returncode != 0
        assert "Permission denied" in denied.stderr


def test_checkpoints_work_on_a_clone(two_clones: tuple[VM, VM]) -> None:
    vm = two_clones[1]
    vm.snapshot("step-1")
    assert vm.exec("echo changed > /tmp/mark").ok
    vm.revert("step-1")
    vm.wait_ready(BOOT_TIMEOUT_S)
    assert vm.exec("cat /tmp/mark").stdout.decode().strip() == TEMPLATE_MARK
    vm.delete_snapshot("step-1")
    assert vm.list_snapshots() == []


def test_a_clone_made_again_is_back_at_the_templates_state_under_the_same_name(
    hv: Hypervisor, template: cl.Template, guest_image: Path
) -> None:
    """What resetting a seat to step 1 does (its template is its step-1 checkpoint): the disk's
    and the RAM's changes gone, and snapshots taken since with them."""
    clone = hv.restore_clone(template, new_session_id(), guest_image, BOOT_TIMEOUT_S)
    try:
        assert cl.template_of(clone.xml(inactive=True), hv.templates()) == template
        booted = "<domain><devices><disk><source file='/var/lib/x.qcow2'/></disk></devices></domain>"
        assert cl.template_of(booted, hv.templates()) is None  # reclone refuses it (TemplateInvalid)
        assert clone.exec("echo changed > /tmp/mark && echo mine > /root/mine && sync").ok
        clone.snapshot("step-2")
        again = hv.reclone(clone, guest_image, BOOT_TIMEOUT_S)
        assert again.name == clone.name
        assert again.exec("cat /tmp/mark").stdout.decode().strip() == TEMPLATE_MARK
        assert not again.exec("test -e /root/mine").ok
        assert again.list_snapshots() == []
        assert again.name in hv.template_users(template)
    finally:
        clone.destroy()


def test_a_template_in_use_is_not_removed_and_destroy_leaves_nothing(
    hv: Hypervisor, template: cl.Template, guest_image: Path
) -> None:
    clone = hv.restore_clone(template, new_session_id(), guest_image, BOOT_TIMEOUT_S)
    directory = session_dir(hv.disks_root, clone.session_id)
    assert clone.name in hv.template_users(template)
    with pytest.raises(TemplateInUse):
        hv.remove_template(template)
    assert cl.load_template(template.directory) == template  # nothing of it deleted
    clone.destroy()
    assert not directory.exists()
    assert clone.name not in hv.template_users(template)
    assert clone.state() == "missing"


def test_a_save_image_of_another_format_is_refused(tmp_path: Path, template: cl.Template) -> None:
    good = template.save_image.read_bytes()[:200_000]
    for offset, value in ((0, b"LibvirtQemudPart"), (16, struct.pack("<I", 3)), (28, struct.pack("<I", 1))):
        path = tmp_path / f"bad-{offset}.save"
        path.write_bytes(good[:offset] + value + good[offset + len(value) :])
        with pytest.raises(TemplateInvalid):
            save_image.read_save_image(path)
    too_big = save_image.read_save_image(template.save_image)
    huge = "<domain>" + "x" * too_big.data_len + "</domain>"
    with pytest.raises(TemplateInvalid, match="does not fit"):
        save_image.write_save_image(template.save_image, tmp_path / "huge.save", too_big, huge)
    assert ET.fromstring(too_big.xml).tag == "domain"  # noqa: S314 - libvirtd's own XML
