"""One VM's QEMU cannot reach another's files; CPU and disk I/O are limited per VM; the host check.

Real libvirtd and QEMU: two `tiny` VMs boot, and VM A's credentials, inside A's QEMU's own mount
namespace, try to open VM B's disk and kernel copy.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import libvirt
import pytest
from pytest_django import Settings

from labs.host import host_agent
from labs.hypervisor import VM, HostCapacity, Hypervisor, HypervisorError, OutOfCapacity
from labs.hypervisor import confinement as conf
from labs.hypervisor.disks import session_dir
from labs.hypervisor.domain_xml import VMIdentity, build_probe_xml, resource_limits
from labs.hypervisor.image import load_image
from labs.profiles import get_profile
from portal.health import advert_checks

pytestmark = [pytest.mark.vm, pytest.mark.slow]


def qemu_pid(vm: VM) -> int:
    return int(Path(f"/run/libvirt/qemu/{vm.name}.pid").read_text())


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def ids_of(pid: int) -> tuple[int, int]:
    status = proc_status(pid)
    uids, gids = {int(v) for v in status["Uid"].split()}, {int(v) for v in status["Gid"].split()}
    assert len(uids) == len(gids) == 1, status  # real, effective, saved and fs ids agree
    return uids.pop(), gids.pop()


def open_as(pid: int, path: Path, mode: str = "r") -> subprocess.CompletedProcess[str]:
    """Open `path` with the credentials of process `pid`, inside its mount namespace."""
    uid, gid = ids_of(pid)
    action = f"head -c 4 {path} >/dev/null" if mode == "r" else f": >> {path}"
    return subprocess.run(
        ["nsenter", f"--target={pid}", "--mount", "--", "setpriv", f"--reuid={uid}", f"--regid={gid}",
         "--clear-groups", "sh", "-c", action],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def two_vms(boot_vm: Callable[[str], VM]) -> tuple[VM, VM]:
    return boot_vm("tiny"), boot_vm("tiny")


def test_each_vm_runs_as_its_own_unprivileged_uid_under_seccomp(two_vms: tuple[VM, VM]) -> None:
    pids = [qemu_pid(vm) for vm in two_vms]
    ids = [ids_of(pid) for pid in pids]
    assert ids[0] != ids[1]
    for (uid, gid), pid in zip(ids, pids, strict=True):
        assert uid in conf.vm_ids()
        assert gid == uid
        status = proc_status(pid)
        assert status["Groups"].split() in ([], [str(gid)]), "no supplementary groups (kvm, libvirt-qemu…)"
        assert status["Seccomp"].strip() == "2"
        assert int(status["CapEff"], 16) == 0
        assert status["NoNewPrivs"].strip() == "1"


def test_a_vms_qemu_cannot_open_another_vms_disk_or_kernel(hv: Hypervisor, two_vms: tuple[VM, VM]) -> None:
    a, b = two_vms
    pid_a = qemu_pid(a)
    uid_b, _gid_b = ids_of(qemu_pid(b))
    b_dir = session_dir(hv.disks_root, b.session_id)
    b_files = [Path(path) for _target, path in b.disk_targets()] + [b_dir / "bzImage", b_dir / "initrd.img"]
    for path in b_files:
        info = path.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (uid_b, 0o600), path
        denied = open_as(pid_a, path)
        assert denied.returncode != 0, path
        assert "Permission denied" in denied.stderr, (path, denied)
        assert open_as(pid_a, path, "w").returncode != 0
    # The same credentials do open A's own disk: the denial is about ownership, not the method.
    (_target, own_disk), *_ = a.disk_targets()
    assert open_as(pid_a, Path(own_disk)).returncode == 0


def test_the_images_shared_files_stay_root_owned_and_read_only(two_vms: tuple[VM, VM], guest_image: Path) -> None:
    image = load_image(guest_image)
    pid_a = qemu_pid(two_vms[0])
    for path in (image.kernel, image.initrd, image.tools):
        info = path.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o644), path
        assert open_as(pid_a, path).returncode == 0
        assert open_as(pid_a, path, "w").returncode != 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cores_used(pid: int, seconds: float) -> float:
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - start_cpu) / (time.monotonic() - start)


def test_cpu_quota_caps_a_busy_guest(hv: Hypervisor, two_vms: tuple[VM, VM]) -> None:
    vm = two_vms[0]
    domain = hv.conn.lookupByName(vm.name)
    params = domain.schedulerParameters()
    assert (params["global_period"], params["global_quota"]) == (100_000, 100_000)  # one core per vCPU
    vm.exec("(while :; do :; done) >/dev/null 2>&1 & echo $! > /run/busy", timeout_s=30)
    try:
        # The default cannot be exceeded by one vCPU anyway; a tighter quota shows the cgroup acts.
        domain.setSchedulerParametersFlags({"global_quota": 25_000}, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        time.sleep(1)
        assert cores_used(qemu_pid(vm), 4) < 0.35
    finally:
        domain.setSchedulerParametersFlags({"global_quota": 100_000}, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        vm.exec("kill $(cat /run/busy)", timeout_s=30)


def test_disk_io_is_throttled_per_vm(hv: Hypervisor, two_vms: tuple[VM, VM]) -> None:
    vm = two_vms[1]
    domain = hv.conn.lookupByName(vm.name)
    limits = resource_limits(get_profile("tiny"))
    tune = domain.blockIoTune("vda", 0)
    assert (tune["total_bytes_sec"], tune["total_iops_sec"]) == (limits.disk_bytes_per_s, limits.disk_iops)
    assert tune["group_name"] == "virtlab-vm"
    # Measured through the same QEMU throttle at a rate a test can wait for: 8 MiB at 4 MiB/s.
    slow = {**{k: 0 for k in tune if k.endswith(("_max", "_max_length"))}, "total_bytes_sec": 4 * 1024 * 1024}
    domain.setBlockIoTune("vda", slow, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    try:
        started = time.monotonic()
        result = vm.exec("dd if=/dev/zero of=/dev/vda bs=1M count=8 oflag=direct", timeout_s=60)
        elapsed = time.monotonic() - started
    finally:
        domain.setBlockIoTune(
            "vda", {k: v for k, v in tune.items() if k != "group_name"}, libvirt.VIR_DOMAIN_AFFECT_LIVE
        )
    assert result.exit_code == 0, result
    assert elapsed >= 1.5, f"8 MiB at 4 MiB/s took {elapsed:.2f} s"


def test_a_stopped_vms_files_go_back_to_their_owner(two_vms: tuple[VM, VM]) -> None:
    # The last test to use the module's VMs: it shuts one down rather than booting a third (~10 s).
    vm = two_vms[0]
    uid, _gid = ids_of(qemu_pid(vm))
    scratch = Path(vm.disk_targets()[0][1])
    assert scratch.stat().st_uid == uid
    vm.shutdown(timeout_s=60)
    assert scratch.stat().st_uid == os.geteuid()  # remember_owner: nobody's VM uid any more
    assert stat.S_IMODE(scratch.stat().st_mode) == 0o600


def test_host_check_proves_confinement_and_leaves_no_probe(hv: Hypervisor) -> None:
    state = hv.check_confinement()
    assert state.active, state.problems
    assert (state.per_vm_ids, state.seccomp, state.cpu_limits, state.process_checked) == (True, True, True, True)
    assert state.summary.startswith("confined: per-VM uid/gid")
    assert not [d.name() for d in hv.conn.listAllDomains(0) if d.name().startswith(conf.PROBE_NAME_PREFIX)]


class FakeDomain:
    def __init__(self, xml: str):
        self.xml = xml

    def XMLDesc(self, _flags: int = 0) -> str:
        return self.xml

    def schedulerParameters(self) -> dict[str, int]:
        return {"global_period": 100_000, "global_quota": 100_000}

    def destroy(self) -> None:
        pass


class FakeConnection:
    """What libvirt reports on a host whose qemu.conf runs QEMU as root without the sandbox."""

    def getCapabilities(self) -> str:
        return (
            "<capabilities><host><secmodel><model>none</model></secmodel>"
            "<secmodel><model>dac</model><baselabel type='qemu'>+0:+0</baselabel></secmodel></host></capabilities>"
        )

    def domainXMLToNative(self, _format: str, _xml: str, _flags: int) -> str:
        return "/usr/bin/qemu-system-x86_64 -name guest=probe -machine pc"

    def createXML(self, xml: str, _flags: int) -> FakeDomain:
        return FakeDomain(xml)


def test_host_check_names_what_is_missing(tmp_path: Path) -> None:
    state = conf.check_host(cast(libvirt.virConnect, FakeConnection()), pid_dir=tmp_path)
    assert not state.active
    assert state.summary.startswith("NOT confined")
    assert any("as root" in p for p in state.problems)
    assert any("seccomp" in p for p in state.problems)


def test_vm_ids_are_unique_and_freed_ids_are_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(conf.VM_ID_BASE_ENV, "800000")
    assert conf.allocate_id(set()) == 800001  # the base itself is the host check's probe
    assert conf.allocate_id({800001, 800002}) == 800003
    assert conf.allocate_id({800002}) == 800001
    with pytest.raises(OutOfCapacity, match="VM uids"):
        conf.allocate_id(conf.vm_ids())
    monkeypatch.setenv(conf.VM_ID_BASE_ENV, "0")
    with pytest.raises(HypervisorError, match="VIRTLAB_VM_ID_BASE"):
        conf.vm_ids()


def test_dac_labels_are_read_from_domain_xml() -> None:
    identity = VMIdentity(700000005, 700000005, Path("/k"), Path("/i"))
    xml = build_probe_xml("p", identity, resource_limits(get_profile("tiny")))
    assert conf.dac_label_id(xml) == 700000005
    assert conf.dac_label_id("<domain><seclabel type='dynamic' model='selinux'/></domain>") is None
    assert conf.dac_label_id("not xml") is None


CAPACITY = HostCapacity("tcg", "", total_mem_mib=24000, free_mem_mib=23000, vm_count=0, max_vms=120, cpus=2)
IMAGE = (True, "abc", "")


def test_an_unconfined_host_advertises_why_and_takes_no_vms(settings: Settings) -> None:
    settings.LABS_ALLOW_UNCONFINED = False
    missing = conf.ConfinementState(False, "NOT confined: QEMU's seccomp sandbox is off", ("seccomp off",))
    advert = host_agent._advert(CAPACITY, missing, IMAGE)
    assert (advert.confined, advert.max_vms) == (False, 0)  # placement and the warm pool pass it by
    assert "refusing VMs" in advert.confinement
    assert "LABS_ALLOW_UNCONFINED=1" in advert.confinement
    (check,) = [c for c in advert_checks(advert) if c.name.startswith("confinement:")]
    assert not check.ok
    assert "seccomp" in check.detail
    assert "setup-libvirt.sh" in check.hint

    settings.LABS_ALLOW_UNCONFINED = True
    allowed = host_agent._advert(CAPACITY, missing, IMAGE)
    assert (allowed.confined, allowed.max_vms) == (False, host_agent.vm_limit(CAPACITY))
    assert "running VMs anyway" in allowed.confinement


def test_the_host_agent_checks_confinement_and_advertises_it(hv: Hypervisor, settings: Settings) -> None:
    settings.LABS_ALLOW_UNCONFINED = False
    state = host_agent.confinement_state(hv, refresh=True)
    assert state.active, state.problems
    advert = host_agent.build_advert(hv)
    assert advert.confined
    assert advert.confinement.startswith("confined: per-VM uid/gid")
    assert advert.max_vms > 0
    (check,) = [c for c in advert_checks(advert) if c.name.startswith("confinement:")]
    assert check.ok
