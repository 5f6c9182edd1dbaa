"""ublk-server in the guest: RAM and file targets carry an ext4 filesystem, list shows queues, del;
user copy, discard, and what a killed server leaves behind.

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
    match = re.search(r"added device (\d+): /dev/ublkb(\d+) \(ram, 32 MiB, 2 queues, depth 16, buffer copy\)", out)
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
    assert "(file /tmp/backing.img, 24 MiB, 1 queue, depth 32, buffer copy)" in out
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
    code, out = vm.run("ublk-server add --type ram --size 1M --copy zero")
    assert code == 1
    assert "--copy must be buffer or user" in out
    code, out = vm.run("ublk-server del 7")
    assert code == 1
    assert "no such device" in out


def _memory_used_kib(vm: SerialGuest, dev_id: int) -> int:
    listing = vm.check("ublk-server list")
    found = re.search(rf"dev {dev_id}: .*\n.*\n  target ram .*memory used (\d+) KiB", listing)
    assert found, listing
    return int(found[1])


def test_user_copy_and_discard(guest: SerialGuest) -> None:
    vm = guest
    out = vm.check("ublk-server add --type ram --size 32M --copy user")
    dev_id = added_device(out)
    assert "user copy" in out
    # The kernel accepted UBLK_F_USER_COPY (bit 7): the mode list reports comes from GET_DEV_INFO.
    listing = vm.check("ublk-server list")
    flags = re.search(rf"dev {dev_id}: .*\n  flags (0x[0-9a-f]+)  copy user", listing)
    assert flags, listing
    assert int(flags[1], 16) & (1 << 7), listing
    _round_trip(vm, f"/dev/ublkb{dev_id}")

    # Whole-device data through user copy, then a discard gives the memory back and reads zeros.
    dev = f"/dev/ublkb{dev_id}"
    vm.check(f"dd if=/tmp/payload of={dev} bs=64k oflag=direct 2>/dev/null")
    assert _memory_used_kib(vm, dev_id) >= 2000
    assert vm.check(f"cat /sys/block/ublkb{dev_id}/queue/discard_max_bytes") == "1073741824\n"
    vm.check(f"blkdiscard {dev}")
    assert _memory_used_kib(vm, dev_id) == 0
    vm.check(f"cmp -n 2048000 {dev} /dev/zero")
    assert re.search(r"discards [1-9]", vm.check("ublk-server list"))
    vm.check(f"ublk-server del {dev_id} && " + WAIT_GONE.format(id=dev_id))

    # A file target punches holes: the file gives its blocks back.
    dev_id = added_device(vm.check("ublk-server add --type file --file /tmp/holes.img --size 8M --copy user"))
    vm.check(f"dd if=/tmp/payload of=/dev/ublkb{dev_id} bs=64k oflag=direct 2>/dev/null")
    before = int(vm.check("du -k /tmp/holes.img").split()[0])
    vm.check(f"blkdiscard /dev/ublkb{dev_id}")
    after = int(vm.check("du -k /tmp/holes.img").split()[0])
    assert before >= 1900, before
    assert after < 100, after
    vm.check(f"ublk-server del {dev_id} && " + WAIT_GONE.format(id=dev_id) + " && rm /tmp/holes.img")


def test_a_killed_server_takes_the_disk_away(guest: SerialGuest) -> None:
    vm = guest
    dev_id = added_device(vm.check("ublk-server add --type ram --size 16M"))
    pid = vm.check(f"ublk-server list | sed -n 's/^dev {dev_id}: .*server pid \\([0-9]*\\).*/\\1/p'").strip()
    # The server locks its memory (mlockall), so it never waits for a page-out to its own disk.
    assert re.search(r"VmLck:\s+[1-9]\d* kB", vm.check(f"grep VmLck /proc/{pid}/status"))
    vm.check(f"mkfs.ext4 -q /dev/ublkb{dev_id} && mount /dev/ublkb{dev_id} /mnt/u && echo hi > /mnt/u/f && sync")
    vm.check(f"kill -9 {pid}")
    # No recovery flags: the kernel fails what was in flight and removes the block device ...
    vm.check(
        f"for i in $(seq 50); do [ -e /dev/ublkb{dev_id} ] || break; sleep 0.1; done; ! test -e /dev/ublkb{dev_id}"
    )
    code, out = vm.run("echo 3 > /proc/sys/vm/drop_caches; cat /mnt/u/f")
    assert code == 1
    assert "Input/output error" in out
    # ... but keeps the char device and the id, DEAD, until someone deletes it.
    listing = vm.check("ublk-server list")
    assert re.search(rf"dev {dev_id}: .*state DEAD .*\(gone\)", listing), listing
    vm.check(f"umount /mnt/u && ublk-server del {dev_id} && " + WAIT_GONE.format(id=dev_id))
