"""One `tiny` VM, booted once for the module: control channel, console, confinement, disks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from labs.hypervisor import VM, CommandTimeout, Hypervisor
from labs.hypervisor.confinement import vm_ids
from labs.hypervisor.naming import METADATA_NS

from .conftest import parse_xml, validate_domain_xml

pytestmark = [pytest.mark.vm, pytest.mark.slow]

PROMPT = b"root@virtlab:"


def test_exec_returns_exit_code_stdout_and_stderr_separately(tiny_vm: VM) -> None:
    result = tiny_vm.exec("echo out; echo err >&2; exit 7")
    assert (result.exit_code, result.stdout, result.stderr) == (7, b"out\n", b"err\n")
    assert not result.ok
    assert 0 < result.duration_s < 10


def test_exec_argv_and_stdin(tiny_vm: VM) -> None:
    assert tiny_vm.exec(["/bin/busybox", "uname", "-r"]).text.startswith("6.12.")
    assert tiny_vm.exec("tr a-z A-Z", stdin=b"shout\n").stdout == b"SHOUT\n"


def test_exec_timeout_kills_the_command_and_the_guest_stays_usable(tiny_vm: VM) -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as excinfo:
        tiny_vm.exec("echo started; sleep 31; echo never", timeout_s=1.5)
    assert time.monotonic() - started < 15
    assert "1.5s" in str(excinfo.value)
    # The shell and its sleep child were both killed: nothing of the command is left.
    assert "sleep 31" not in tiny_vm.exec("ps").text
    assert tiny_vm.exec("echo still-here").text == "still-here\n"


def test_guest_files_round_trip_through_the_agent(tiny_vm: VM) -> None:
    payload = bytes(range(256)) * 400  # binary, larger than one transfer chunk
    tiny_vm.agent.write_file("/tmp/blob", payload)
    assert tiny_vm.agent.read_file("/tmp/blob") == payload
    assert tiny_vm.exec("wc -c < /tmp/blob").text.strip() == str(len(payload))


def test_console_echoes_typed_keys_and_shows_the_prompt(tiny_vm: VM) -> None:
    with tiny_vm.console() as console:
        console.read_until(PROMPT, timeout=30)  # the newline sent on attach redraws the prompt
        console.write(b"echo typed-$((6*7))\r")
        output = console.read_until(b"typed-42\r\n", timeout=30)
        assert b"echo typed-$((6*7))" in output  # the echo of what was typed
        console.read_until(PROMPT, timeout=30)
        # Output that arrives in one chunk with a marker stays readable after read_until().
        console.write(b"echo first-$((1+1)); echo second-$((2+2))\r")
        assert console.read_until(b"first-2\r\n", timeout=30).endswith(b"first-2\r\n")
        console.read_until(b"second-4\r\n", timeout=30)
        console.read_until(PROMPT, timeout=30)
        # Commands on the control channel never appear on the learner's console.
        tiny_vm.exec("echo control-only")
        assert b"control-only" not in console.read(timeout=1.0)


def test_qemu_runs_unprivileged_with_seccomp(tiny_vm: VM) -> None:
    pid = Path(f"/run/libvirt/qemu/{tiny_vm.name}.pid").read_text().strip()
    status = Path(f"/proc/{pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uid_line.split()[1:]) != {"0"}, "QEMU runs as root"
    assert "Seccomp:\t2" in status  # filter mode
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"-sandbox" in argv
    assert any(a.startswith(b"tcg,tb-size=") for a in argv) or b"kvm" in b" ".join(argv)
    # Each VM's QEMU runs as a uid of its own (tests/hypervisor/test_confinement.py).
    assert {int(v) for v in uid_line.split()[1:]} <= set(vm_ids())


def test_live_xml_is_schema_valid_and_tagged(tiny_vm: VM, tmp_path: Path) -> None:
    xml = tiny_vm.xml()
    validate_domain_xml(xml, tmp_path)
    root = parse_xml(xml)
    assert root.findtext(f"./metadata/{{{METADATA_NS}}}session/{{{METADATA_NS}}}id") == tiny_vm.session_id
    assert root.find("./devices/interface") is None


def test_block_info_is_read_from_the_host(tiny_vm: VM) -> None:
    (info,) = tiny_vm.block_info()
    assert info.target == "vda"
    assert info.capacity == 64 * 1024 * 1024
    assert info.path.endswith(f"/{tiny_vm.session_id}/scratch.qcow2")
    assert tiny_vm.exec("cat /sys/block/vda/size").text.strip() == str(64 * 1024 * 1024 // 512)


def test_create_vm_is_idempotent(hv: Hypervisor, tiny_vm: VM, guest_image: Path) -> None:
    uuid_before = parse_xml(tiny_vm.xml()).findtext("uuid")
    again = hv.create_vm(tiny_vm.session_id, "tiny", guest_image)
    assert parse_xml(again.xml()).findtext("uuid") == uuid_before
    assert again.exec("cat /proc/uptime").ok  # same running guest, not a reboot
    assert [d.session_id for d in hv.list_tagged()].count(tiny_vm.session_id) == 1


def test_capacity_counts_the_vm_and_reports_the_accelerator(hv: Hypervisor, tiny_vm: VM, guest_image: Path) -> None:
    capacity = hv.capacity(guest_image)
    assert capacity.vm_count >= 1
    assert capacity.accelerator in ("kvm", "tcg")
    assert capacity.accelerator_reason
    assert capacity.max_vms > capacity.vm_count
    assert 0 < capacity.free_mem_mib < capacity.total_mem_mib
    assert "vfio_pci" in {f.replace("-", "_") for f in capacity.kernel_features}


def test_snapshot_and_revert_roll_back_memory_and_disk(tiny_vm: VM) -> None:
    tiny_vm.exec("echo before > /root/state && printf AAAA | dd of=/dev/vda bs=4 count=1 conv=fsync 2>/dev/null")
    tiny_vm.snapshot("checkpoint-1")
    assert "checkpoint-1" in tiny_vm.list_snapshots()

    tiny_vm.exec("echo after > /root/state && printf BBBB | dd of=/dev/vda bs=4 count=1 conv=fsync 2>/dev/null")
    assert tiny_vm.exec("cat /root/state; head -c4 /dev/vda").text == "after\nBBBB"

    tiny_vm.revert("checkpoint-1")
    tiny_vm.wait_ready(60)
    # /root is in RAM (initramfs): "before" proves RAM came back; vda proves the disk did.
    assert tiny_vm.exec("cat /root/state; head -c4 /dev/vda").text == "before\nAAAA"
    with tiny_vm.console() as console:  # a fresh console works after the revert
        console.read_until(PROMPT, timeout=30)

    tiny_vm.delete_snapshot("checkpoint-1")
    assert "checkpoint-1" not in tiny_vm.list_snapshots()


def test_managed_save_resumes_the_same_guest(tiny_vm: VM) -> None:
    tiny_vm.exec("echo kept-in-ram > /root/saved")
    tiny_vm.managed_save()
    assert tiny_vm.state() == "shutoff"
    assert tiny_vm.has_managed_save()
    started = time.monotonic()
    tiny_vm.start()
    tiny_vm.wait_ready(60)
    assert time.monotonic() - started < 30
    assert not tiny_vm.has_managed_save()
    assert tiny_vm.exec("cat /root/saved").text == "kept-in-ram\n"  # resumed, not rebooted


def _qemu_anon_rss_mib(vm: VM) -> float:
    pid = Path(f"/run/libvirt/qemu/{vm.name}.pid").read_text().strip()
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(status["RssAnon"].split()[0]) / 1024


def test_memory_the_guest_frees_leaves_qemus_rss(tiny_vm: VM) -> None:
    # Free page reporting (virtio balloon): without it, pages a guest once touched stay in QEMU.
    assert tiny_vm.exec("cat /sys/module/page_reporting/parameters/page_reporting_order").text == "0\n"
    tiny_vm.exec("dd if=/dev/urandom of=/dev/shm/fill bs=1M count=24 2>/dev/null")
    filled = _qemu_anon_rss_mib(tiny_vm)
    tiny_vm.exec("rm /dev/shm/fill")
    deadline = time.monotonic() + 30
    while _qemu_anon_rss_mib(tiny_vm) > filled - 16 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _qemu_anon_rss_mib(tiny_vm) <= filled - 16, f"RSS stayed near {filled:.0f} MiB after the guest freed 24 MiB"
