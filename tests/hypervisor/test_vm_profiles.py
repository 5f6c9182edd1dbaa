"""The other vetted profiles booted for real: vfio (vIOMMU + edu), storage, container."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from labs.hypervisor import VM
from tests import servers

pytestmark = [pytest.mark.vm, pytest.mark.slow]

EDU_ID = "0x1234:0x11e8"
FIND_EDU = (
    f'for d in /sys/bus/pci/devices/*; do [ "$(cat $d/vendor):$(cat $d/device)" = {EDU_ID} ] && echo ${{d##*/}}; done'
)


def manifest(guest_image: Path) -> dict[str, list[str]]:
    data: dict[str, list[str]] = json.loads((guest_image / "manifest.json").read_text())
    return data


@pytest.fixture(scope="module")
def vfio_vm(boot_vm: Callable[[str], VM]) -> VM:
    return boot_vm("vfio")


def test_vfio_profile_binds_edu_to_vfio_pci_and_runs_vfio_edu(vfio_vm: VM, guest_image: Path) -> None:
    if "vfio-edu" not in manifest(guest_image).get("programs", []):
        servers.unavailable("the guest image has no vfio-edu program (manifest.json 'programs')")
    bdf = vfio_vm.exec(FIND_EDU).text.strip()
    assert bdf, "edu device not on the PCI bus"
    group = vfio_vm.exec(f"basename $(readlink /sys/bus/pci/devices/{bdf}/iommu_group)").text.strip()
    bind = vfio_vm.exec(
        "modprobe vfio-pci && modprobe vfio_iommu_type1"
        f" && echo vfio-pci > /sys/bus/pci/devices/{bdf}/driver_override"
        f" && echo {bdf} > /sys/bus/pci/drivers_probe && test -c /dev/vfio/{group}"
    )
    assert bind.ok, bind.stderr
    assert vfio_vm.exec(f"basename $(readlink /sys/bus/pci/devices/{bdf}/driver)").text.strip() == "vfio-pci"

    result = vfio_vm.exec("vfio-edu all", timeout_s=120)
    assert result.ok, result.stdout + result.stderr
    assert "10! = 3628800" in result.text
    assert "through the IOMMU: OK" in result.text
    assert result.text.rstrip().endswith("vfio-edu: all stages OK")


def test_edu_keeps_its_pci_configuration_across_a_revert(vfio_vm: VM) -> None:
    """QEMU's snapshots lose edu's state (it has none to migrate); VM.revert() puts its config back."""
    bdf = vfio_vm.exec(FIND_EDU).text.strip()
    config = vfio_vm.exec(f"od -An -tx1 -N64 /sys/bus/pci/devices/{bdf}/config").text
    vfio_vm.snapshot("edu-config")
    vfio_vm.revert("edu-config")
    assert vfio_vm.exec(f"od -An -tx1 -N64 /sys/bus/pci/devices/{bdf}/config").text == config
    result = vfio_vm.exec("vfio-edu bar0", timeout_s=60)  # reads edu's ID register through BAR0
    assert result.ok, result.stdout + result.stderr
    vfio_vm.delete_snapshot("edu-config")


def test_ublk_driver_loads(vfio_vm: VM, guest_image: Path) -> None:
    if "ublk_drv" not in manifest(guest_image).get("modules", []):
        servers.unavailable("the guest image ships no ublk_drv module")
    result = vfio_vm.exec("modprobe ublk_drv && test -c /dev/ublk-control && grep -c ^ublk_drv /proc/modules")
    assert result.ok, result.stderr
    assert result.text.strip() == "1"


def test_mtty_mdev_instance_can_be_created(vfio_vm: VM, guest_image: Path) -> None:
    if "mtty" not in manifest(guest_image).get("modules", []):
        servers.unavailable("the guest image ships no mtty module (kernel samples are not in Debian's build)")
    assert vfio_vm.exec("modprobe mtty").ok
    parent = "/sys/class/mdev_bus/mtty/mdev_supported_types"
    mdev_type = vfio_vm.exec(f"ls {parent}").text.split()[-1]
    instance = str(uuid.uuid4())
    created = vfio_vm.exec(f"echo {instance} > {parent}/{mdev_type}/create && ls /sys/bus/mdev/devices/")
    assert created.ok, created.stderr
    assert instance in created.text.split()
    assert vfio_vm.exec(f"echo 1 > /sys/bus/mdev/devices/{instance}/remove").ok
    assert instance not in vfio_vm.exec("ls /sys/bus/mdev/devices/").text.split()


def test_vfio_profile_has_an_iommu_and_its_kernel_arguments(vfio_vm: VM) -> None:
    assert "intel_iommu=on" in vfio_vm.exec("cat /proc/cmdline").text
    groups = vfio_vm.exec("ls /sys/kernel/iommu_groups").text.split()
    assert len(groups) >= 2


def test_storage_profile_has_two_blank_data_disks(boot_vm: Callable[[str], VM]) -> None:
    vm = boot_vm("storage")
    sizes = vm.exec("for d in vda vdb vdc; do echo $d $(cat /sys/block/$d/size); done").text.splitlines()
    assert sizes == ["vda 131072", "vdb 524288", "vdc 524288"]
    assert [i.target for i in vm.block_info()] == ["vda", "vdb", "vdc"]
    # The data disks are usable block devices: a filesystem round trip on vdb.
    fs = vm.exec(
        "modprobe ext4 && mkfs.ext4 -q /dev/vdb && mkdir -p /mnt/b"
        " && mount /dev/vdb /mnt/b && echo ok > /mnt/b/f && cat /mnt/b/f"
    )
    assert fs.text == "ok\n", fs.stderr
    assert vm.block_info()[1].allocation > 0


def test_container_profile_has_more_memory_and_cgroups(boot_vm: Callable[[str], VM]) -> None:
    vm = boot_vm("container")
    mem_kib = int(vm.exec("awk '/MemTotal/ {print $2}' /proc/meminfo").text)
    assert mem_kib > 180 * 1024  # 256 MiB guest (the kernel keeps some for itself)
    assert "memory" in vm.exec("cat /sys/fs/cgroup/cgroup.subtree_control").text
    assert vm.exec("unshare --mount --pid --fork true").ok
