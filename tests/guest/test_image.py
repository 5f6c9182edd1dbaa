"""The lab guest image itself, booted under bare QEMU/TCG (no libvirt).

Each test boots one guest (a few seconds under TCG) and checks what the labs rely on: the
prompt, modules, tools, the guest agent, user-space VFIO on the edu device and mdev (mtty).
"""

from __future__ import annotations

import base64
import json
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .serial_guest import BUILD_SCRIPT, CMDLINE, BootGuest, SerialGuest

pytestmark = [pytest.mark.slow, pytest.mark.vm]

GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"


def test_build_is_cached_and_readable_by_unprivileged_qemu(guest_image: Path) -> None:
    started = time.monotonic()
    proc = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=300, check=True)
    elapsed = time.monotonic() - started

    assert Path(proc.stdout.strip().splitlines()[-1]) == guest_image
    assert elapsed < 30, f"cached build.sh took {elapsed:.1f} s"
    assert (guest_image.parent / "current").resolve() == guest_image.resolve()
    for name in ("vmlinux", "bzImage", "initrd.img", "tools.img", "manifest.json"):
        mode = (guest_image / name).stat().st_mode
        assert mode & stat.S_IROTH, f"{name} is not world-readable"
    assert guest_image.stat().st_mode & 0o777 == 0o755
    manifest = json.loads((guest_image / "manifest.json").read_text())
    assert manifest["hash"] == guest_image.name
    assert manifest["kernel"]["release"].startswith("6.12.")
    assert {"qemu-ga", "qemu-img", "vfio-edu", "ublk-server", "qemu-nbd", "busybox"} <= set(manifest["programs"])
    assert {"vfio_pci", "mdev", "mtty", "ublk_drv", "nbd", "ext4", "virtio_balloon"} <= set(manifest["modules"])
    # The initramfs (guest RAM for the VM's life) holds only what init needs to mount the tools disk.
    assert manifest["sizes"]["initramfs_uncompressed"] < 12 * 2**20, manifest["sizes"]
    assert manifest["tools_disk"]["serial"] == "virtlab-tools"


def test_vmlinux_leaves_its_zero_tail_to_the_loader(guest_image: Path) -> None:
    # QEMU keeps the kernel mmapped as a ROM: zeros stored in the file would sit in every VM's RSS.
    argv = ["readelf", "-lW", str(guest_image / "vmlinux")]
    headers = subprocess.run(argv, capture_output=True, text=True, check=True)
    loads = [line.split() for line in headers.stdout.splitlines() if line.split()[:1] == ["LOAD"]]
    file_mib = sum(int(f[4], 16) for f in loads) / 2**20
    mem_mib = sum(int(f[5], 16) for f in loads) / 2**20
    assert mem_mib - file_mib > 10, f"PT_LOAD file sizes {file_mib:.1f} MiB of {mem_mib:.1f} MiB in memory"


@pytest.fixture(scope="module")
def agent_socket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the `pc` guest's agent channel (virtio-serial) comes out on the host."""
    return tmp_path_factory.mktemp("qga") / "qga.sock"


@pytest.fixture(scope="module")
def pc_guest(boot_guest: BootGuest, agent_socket: Path) -> Iterator[SerialGuest]:
    """One plain `pc` guest with 128 MiB and the guest agent's channel, shared by the tests below
    (boots cost seconds)."""
    # virtio-rng: without host entropy getrandom() blocks for seconds under TCG (mkfs stalls).
    extra = [
        "-device", "virtio-rng-pci",
        "-device", "virtio-serial-pci",
        "-chardev", f"socket,id=qga,path={agent_socket},server=on,wait=off",
        "-device", f"virtserialport,chardev=qga,name={GUEST_AGENT_CHANNEL}",
    ]  # fmt: skip
    with boot_guest(machine="pc", memory_mib=128, extra=extra) as vm:
        yield vm


def test_boots_to_prompt_with_modules_and_tools(pc_guest: SerialGuest, guest_image: Path) -> None:
    vm = pc_guest
    assert vm.boot_seconds is not None
    assert vm.boot_seconds < 30

    assert vm.check("echo hello") == "hello\n"
    assert vm.check("uname -r").startswith("6.12.")
    assert vm.check("hostname") == "virtlab\n"
    assert guest_image.name in vm.check("cat /etc/virtlab-release")
    assert vm.run("false")[0] == 1

    # init loads drivers for the virtio devices present (coldplug), and only those: virtio_blk
    # for the tools disk, which it mounts read-only; no balloon device here, so no driver.
    assert vm.check("cat /sys/devices/virtual/misc/hw_random/rng_current") == "virtio_rng.0\n"
    modules = vm.check("cat /proc/modules")
    assert "\nvirtio_blk " in "\n" + modules
    assert "virtio_balloon" not in modules
    fstype, options = vm.check("grep ' /usr/lib/virtlab/tools ' /proc/mounts").split()[2:4]
    assert (fstype, options.split(",")[0]) == ("squashfs", "ro")
    assert vm.check("readlink /usr/bin/qemu-img") == "/usr/lib/virtlab/tools/usr/bin/qemu-img\n"
    assert "tools disk" not in vm.check("cat /var/log/init.log")
    # The host's checks write their output to a small tmpfs of their own, there from boot.
    fstype, options = vm.check("grep ' /run/virtlab-check ' /proc/mounts").split()[2:4]
    assert fstype == "tmpfs"
    assert {"size=4096k", "mode=700"} <= set(options.split(",")), options

    # ext4 end to end: real mke2fs, loop device, mount; the kernel autoloads loop and ext4
    # through kmod (init points /proc/sys/kernel/modprobe at it).
    assert vm.check("cat /proc/sys/kernel/modprobe") == "/usr/bin/modprobe\n"
    vm.check(
        "qemu-img create -f raw /tmp/d.img 16M >/dev/null && mkfs.ext4 -q /tmp/d.img"
        " && mkdir -p /mnt/d && mount -o loop /tmp/d.img /mnt/d && echo ok > /mnt/d/f"
        " && umount /mnt/d && blkid /tmp/d.img"
    )
    assert "\next4 " in "\n" + vm.check("cat /proc/modules")

    vm.check("modprobe nbd nbds_max=2 && test -b /dev/nbd0")
    vm.check("modprobe ublk_drv && test -c /dev/ublk-control")
    vm.check("modprobe loop && modprobe overlay && modprobe ext4 && modprobe squashfs")
    loaded = vm.check("cat /proc/modules")
    for module in ("nbd", "ublk_drv", "loop", "overlay", "ext4", "jbd2", "squashfs"):
        assert f"\n{module} " in "\n" + loaded, f"{module} not loaded"

    assert "qemu-img version 7.2" in vm.check("qemu-img --version")
    assert "memory" in vm.check("cat /sys/fs/cgroup/cgroup.subtree_control").split()
    assert "Host bridge" in vm.check("lspci")
    vm.check("unshare --mount --pid --fork true")
    # The real tools, not busybox applets, answer in the learner's shell.
    assert vm.check("type mount modprobe losetup unshare").split("\n")[:4] == [
        "mount is /usr/bin/mount",
        "modprobe is /usr/bin/modprobe",
        "losetup is /usr/sbin/losetup",
        "unshare is /usr/bin/unshare",
    ]


def _connect_unix(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(path))
    return s


class GuestAgent:
    """Minimal client for qemu-ga's JSON protocol: one request, one JSON line back."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = b""
        self.sync_id = 0

    def _line(self, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        while b"\n" not in self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("guest agent socket closed")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line

    def call(self, command: str, timeout: float = 10, **arguments: object) -> object:
        request = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        reply = json.loads(self._line(timeout))
        assert "return" in reply, reply
        return reply["return"]

    def sync(self, timeout: float) -> None:
        """guest-sync until the agent answers (it starts a moment after the shell).

        Requests sent before the agent opened its port are delivered later, so replies to
        earlier attempts may arrive first; they carry older ids and are skipped.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.sync_id += 1
            request = {"execute": "guest-sync", "arguments": {"id": self.sync_id}}
            self.sock.sendall(json.dumps(request).encode() + b"\n")
            try:
                while json.loads(self._line(1)).get("return") != self.sync_id:
                    pass
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise


def test_guest_agent_ping_and_exec(pc_guest: SerialGuest, agent_socket: Path) -> None:
    vm = pc_guest
    agent = GuestAgent(_connect_unix(agent_socket))
    agent.sync(timeout=20)
    assert agent.call("guest-ping") == {}

    started = agent.call(
        "guest-exec", path="/bin/sh", arg=["-c", "uname -r; echo err >&2; exit 3"], **{"capture-output": True}
    )
    assert isinstance(started, dict)
    deadline = time.monotonic() + 10
    while True:
        status = agent.call("guest-exec-status", pid=started["pid"])
        assert isinstance(status, dict)
        if status["exited"]:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    assert status["exitcode"] == 3
    assert base64.b64decode(status["out-data"]).decode().startswith("6.12.")
    assert base64.b64decode(status["err-data"]) == b"err\n"

    # The agent logs to a file, never to the learner's console; it is supervised.
    assert "qemu-ga" not in vm.check("echo console-clean")
    vm.check("kill $(pidof qemu-ga)")
    agent2 = GuestAgent(agent.sock)
    agent2.sync(timeout=20)
    assert agent2.call("guest-ping") == {}


def test_vfio_user_space_driver_for_edu(boot_guest: BootGuest) -> None:
    extra = ["-device", "intel-iommu", "-device", "edu"]
    with boot_guest(machine="q35", memory_mib=256, append=f"{CMDLINE} intel_iommu=on iommu=pt", extra=extra) as vm:
        bdf = vm.check(
            "for d in /sys/bus/pci/devices/*; do"
            ' if [ "$(cat $d/vendor):$(cat $d/device)" = 0x1234:0x11e8 ]; then echo ${d##*/}; fi; done'
        ).strip()
        assert bdf, "edu device not found"
        group = vm.check(f"basename $(readlink /sys/bus/pci/devices/{bdf}/iommu_group)").strip()
        vm.check("modprobe vfio-pci && modprobe vfio_iommu_type1")
        vm.check(
            f"echo vfio-pci > /sys/bus/pci/devices/{bdf}/driver_override"
            f" && echo {bdf} > /sys/bus/pci/drivers_probe && test -c /dev/vfio/{group}"
        )

        out = vm.check("vfio-edu all", timeout=60)
        assert f"edu device {bdf} in IOMMU group {group}" in out
        assert "magic 0xed" in out
        assert "10! = 3628800" in out
        assert "DMA round trip of 4095 bytes through the IOMMU: OK" in out
        assert out.rstrip().endswith("vfio-edu: all stages OK")

        # A single stage replays its prerequisites quietly.
        out = vm.check("vfio-edu factorial 5")
        assert "== factorial 5 ==" in out
        assert "5! = 120" in out
        assert "== container ==" not in out
        assert vm.check(f"vfio-edu group {group}").count("viable") == 1
        rc, out = vm.run("vfio-edu factorial")
        assert rc == 2


def test_mtty_mdev_instance_lifecycle(pc_guest: SerialGuest) -> None:
    vm = pc_guest
    vm.check("modprobe mtty")
    parent = "/sys/class/mdev_bus/mtty/mdev_supported_types"
    types = vm.check(f"ls {parent}").split()
    assert types, "mtty registered no mdev types"
    mdev_type = types[-1]
    before = int(vm.check(f"cat {parent}/{mdev_type}/available_instances"))
    assert before > 0

    instance = str(uuid.uuid4())
    vm.check(f"echo {instance} > {parent}/{mdev_type}/create")
    assert instance in vm.check("ls /sys/bus/mdev/devices/").split()
    assert int(vm.check(f"cat {parent}/{mdev_type}/available_instances")) < before
    assert vm.check(f"basename $(readlink /sys/bus/mdev/devices/{instance}/mdev_type)").strip() == mdev_type

    vm.check(f"echo 1 > /sys/bus/mdev/devices/{instance}/remove")
    assert instance not in vm.check("ls /sys/bus/mdev/devices/").split()
    assert int(vm.check(f"cat {parent}/{mdev_type}/available_instances")) == before


def test_root_is_an_ordinary_mount_so_pivot_root_works(pc_guest: SerialGuest) -> None:
    vm = pc_guest
    # init moved the root off the kernel's rootfs: "/" is a mount with a parent.
    assert vm.check("awk '$5 == \"/\" {print $4}' /proc/self/mountinfo") == "/\n"
    vm.check("mkdir -p /tmp/newroot && mount -t tmpfs tmpfs /tmp/newroot && mkdir /tmp/newroot/old")
    out = vm.check("unshare --mount sh -c 'cd /tmp/newroot && pivot_root . old && echo pivoted'")
    assert out == "pivoted\n"
    vm.check("umount /tmp/newroot")
