"""ublk-server in the guest: RAM and file targets carry an ext4 filesystem, list shows queues, del.

One `pc` guest (TCG) with a virtio scratch disk, so the file target is tried on a block device
too. Data is read back after a remount and a page-cache drop, so it really went through the
server.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .serial_guest import BootGuest, SerialGuest

pytestmark = [pytest.mark.slow, pytest.mark.vm]

WAIT_GONE = "for i in $(seq 100); do [ -e /dev/ublkc{id} ] || break; sleep 0.1; done; ! test -e /dev/ublkc{id}"


@pytest.fixture(scope="module")
def guest(boot_guest: BootGuest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SerialGuest]:
    disk: Path = tmp_path_factory.mktemp("ublk") / "scratch.raw"
    subprocess.run(["truncate", "-s", "64M", str(disk)], check=True)
    # Two vCPUs (the later -smp wins): ublk gives a device at most one queue per CPU.
    # An explicit -device (not -drive if=virtio, which QEMU creates after every -device): the
    # guest then names this disk vda, before the image's tools disk.
    extra = ["-smp", "2", "-device", "virtio-rng-pci", "-drive", f"file={disk},format=raw,if=none,id=d0"]
    extra += ["-device", "virtio-blk-pci,drive=d0"]
    with boot_guest(machine="pc", memory_mib=128, extra=extra) as vm:
        vm.check("modprobe ublk_drv")
        vm.check("dd if=/dev/urandom of=/tmp/payload bs=1k count=2000 2>/dev/null")
        yield vm


def added_device(out: str) -> int:
    """The device id `ublk-server add` printed."""
    found = re.search(r"added device (\d+)", out)
    assert found is not None, out
    return int(found[1])


def _round_trip(vm: SerialGuest, dev: str) -> None:
    """ext4 on `dev`, a file written, unmounted, caches dropped, read back and compared."""
    vm.check(f"mkfs.ext4 -q {dev} && mkdir -p /mnt/u && mount {dev} /mnt/u", timeout=60)
    vm.check("cp /tmp/payload /mnt/u/ && sync && umount /mnt/u && echo 3 > /proc/sys/vm/drop_caches")
    vm.check(f"mount {dev} /mnt/u && cmp /tmp/payload /mnt/u/payload && umount /mnt/u")


def test_ram_device_with_two_queues_serves_ext4(guest: SerialGuest) -> None:
    vm = guest
    out = vm.check("ublk-server add --type ram --size 32M --queues 4 --depth 16")
    assert "asked for 4 queues; ublk allows one per CPU" in out
    match = re.search(r"added device (\d+): /dev/ublkb(\d+) \(ram, 32 MiB, 2 queues, depth 16\)", out)
    assert match, out
    dev_id = int(match[1])
    assert vm.check(f"cat /sys/block/ublkb{dev_id}/size") == "65536\n"
    assert vm.check(f"ls /sys/block/ublkb{dev_id}/mq").split() == ["0", "1"]
    # The server is a background process with one named thread per queue.
    comms = vm.check("for t in /proc/$(pidof ublk-server)/task/*; do cat $t/comm; done").split()
    assert {"ublk-q0", "ublk-q1"} <= set(comms)

    _round_trip(vm, f"/dev/ublkb{dev_id}")

    listing = vm.check("ublk-server list")
    assert re.search(rf"dev {dev_id}: /dev/ublkb{dev_id} .*state LIVE\s+queues 2\s+depth 16", listing), listing
    assert "target ram  size 32 MiB" in listing
    queue_line = r"queue \d: cpus \S+\s+thread \d+\s+reads \d+ \(\d+ KiB\)\s+writes (\d+)"
    writes = [int(n) for n in re.findall(queue_line, listing)]
    assert len(writes) == 2, listing
    assert sum(writes) > 0, listing

    vm.check(f"mount /dev/ublkb{dev_id} /mnt/u")
    code, out = vm.run(f"ublk-server del {dev_id}")
    assert code == 1
    assert "mounted" in out
    vm.check(f"umount /mnt/u && ublk-server del {dev_id}")
    vm.check(WAIT_GONE.format(id=dev_id))
    assert "removed" in vm.check("cat /var/log/ublk-server.log")


def test_file_targets_keep_data_in_the_file_and_on_a_disk(guest: SerialGuest) -> None:
    vm = guest
    out = vm.check("ublk-server add --type file --file /tmp/backing.img --size 24M")
    dev_id = added_device(out)
    assert "(file /tmp/backing.img, 24 MiB, 1 queue, depth 32)" in out
    _round_trip(vm, f"/dev/ublkb{dev_id}")
    assert "target file /tmp/backing.img  size 24 MiB" in vm.check("ublk-server list")
    vm.check(f"ublk-server del {dev_id} && " + WAIT_GONE.format(id=dev_id))
    # The filesystem lives in the file itself: a loop mount of it finds the payload.
    vm.check("mount -o loop,ro /tmp/backing.img /mnt/u && cmp /tmp/payload /mnt/u/payload && umount /mnt/u")

    # A block device as the target: the whole scratch disk.
    out = vm.check("ublk-server add --type file --file /dev/vda")
    dev_id = added_device(out)
    assert "64 MiB" in out
    _round_trip(vm, f"/dev/ublkb{dev_id}")
    vm.check(f"ublk-server del {dev_id} && " + WAIT_GONE.format(id=dev_id))
    assert vm.check("blkid -o value -s TYPE /dev/vda") == "ext4\n"


def test_null_target_list_and_bad_input(guest: SerialGuest) -> None:
    vm = guest
    out = vm.check("ublk-server add --type null --size 1G")
    dev_id = added_device(out)
    # Reads of a null device are zeros; writes vanish.
    vm.check(f"cmp -n 1048576 /dev/ublkb{dev_id} /dev/zero")
    vm.check(f"dd if=/dev/urandom of=/dev/ublkb{dev_id} bs=64k count=4 oflag=direct 2>/dev/null")
    vm.check(f"cmp -n 1048576 /dev/ublkb{dev_id} /dev/zero")
    vm.check(f"ublk-server del {dev_id} && " + WAIT_GONE.format(id=dev_id))
    assert vm.check("ublk-server list") == "no ublk devices\n"

    code, out = vm.run("ublk-server add --type ram")
    assert code == 1
    assert "--size" in out
    code, out = vm.run("ublk-server add --type file --file /nonexistent")
    assert code == 1
    assert "No such file" in out
    code, out = vm.run("ublk-server add --type tape --size 1M")
    assert code == 2
    assert "usage" in out
    code, out = vm.run("ublk-server del 7")
    assert code == 1
    assert "no such device" in out
