"""Benchmark VM start-up and idle cost: bare QEMU versus VirtLab's libvirt path.

    .venv/bin/python bench/vm.py [--runs 10] [--quick] [--image DIR]

Measures (median and p95): bare `qemu-system-x86_64` boot of the guest image with the same virtual
hardware to its shell prompt (baseline), libvirt define+start to the prompt, the first
control-channel command once the agent is ready, resume from a managed save, and the RSS of an
idle VM. Bare and libvirt runs alternate
so host load (other VMs, builds) hits both alike. The last line is machine-readable:
RESULT bare_boot_s=… libvirt_boot_s=… ratio=… exec_ms=… idle_rss_mib=…
"""

from __future__ import annotations

import argparse
import os
import re
import select
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labs.hypervisor import VM, Hypervisor, get_profile, load_image
from labs.hypervisor.connection import HOST_RESERVE_MIB
from labs.hypervisor.image import TOOLS_DISK_SERIAL
from labs.profiles import kernel_cmdline

PROMPT = re.compile(rb"root@virtlab:[^\r\n]*# ")
DEFAULT_IMAGE = Path("/var/cache/virtlab/guest/current")
BOOT_TIMEOUT_S = 120.0


def p95(values: list[float]) -> float:
    """95th percentile (nearest rank); the max for small samples."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def bare_argv(image_dir: Path, workdir: Path) -> list[str]:
    """QEMU's command line for the `tiny` VM without libvirt: the same kernel, initrd, machine,
    TCG cache and virtual hardware as VirtLab's domain XML (qcow2 scratch disk, read-only tools
    disk, agent port on virtio-serial, virtio-rng, balloon with free page reporting), so the
    ratio measures libvirt and VirtLab, not the guest loading drivers for devices the baseline
    lacked (~0.2 s each under TCG)."""
    image, profile = load_image(image_dir), get_profile("tiny")
    scratch = workdir / "scratch.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(scratch), f"{profile.scratch_disk_mib}M"], check=True
    )
    return [
        "qemu-system-x86_64", "-accel", f"tcg,tb-size={profile.tcg_tb_cache_mib}", "-M", profile.machine,
        "-m", str(profile.memory_mib), "-smp", "1", "-nodefaults", "-display", "none", "-no-reboot",
        "-monitor", "none", "-serial", "stdio", "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", kernel_cmdline(profile),
        "-drive", f"file={scratch},if=none,id=vda,format=qcow2,discard=unmap",
        "-device", "virtio-blk-pci,drive=vda",
        "-drive", f"file={image.tools},if=none,id=tools,format=raw,readonly=on",
        "-device", f"virtio-blk-pci,drive=tools,serial={TOOLS_DISK_SERIAL}",
        "-device", "virtio-serial-pci",
        "-chardev", f"socket,id=agent,path={workdir / 'agent.sock'},server=on,wait=off",
        "-device", "virtserialport,chardev=agent,name=org.qemu.guest_agent.0",
        "-object", "rng-random,id=rng0,filename=/dev/urandom", "-device", "virtio-rng-pci,rng=rng0",
        "-device", "virtio-balloon-pci,free-page-reporting=on",
    ]  # fmt: skip


def bare_boot(image_dir: Path) -> float:
    """Seconds from launching QEMU directly (see bare_argv) to the shell prompt on its serial port."""
    with tempfile.TemporaryDirectory(prefix="virtlab-bare-") as tmp:
        argv = bare_argv(image_dir, Path(tmp))
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        output = b""
        try:
            while not PROMPT.search(output):
                if time.monotonic() - started > BOOT_TIMEOUT_S:
                    raise TimeoutError(f"bare QEMU: no prompt after {BOOT_TIMEOUT_S}s: {output[-200:]!r}")
                ready, _, _ = select.select([proc.stdout], [], [], 1.0)
                if ready:
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        raise RuntimeError(f"bare QEMU exited: {output[-300:]!r}")
                    output += chunk
            return time.monotonic() - started
        finally:
            proc.kill()
            proc.wait()


def libvirt_boot(hv: Hypervisor, image_dir: Path) -> tuple[VM, float]:
    """(VM, seconds) from create_vm (define + start) to the prompt on the libvirt console stream."""
    started = time.monotonic()
    vm = hv.create_vm(f"bench-{uuid.uuid4().hex[:10]}", "tiny", image_dir)
    with vm.console(wake=False) as console:
        output = b""
        while not PROMPT.search(output):
            if time.monotonic() - started > BOOT_TIMEOUT_S:
                raise TimeoutError(f"libvirt VM: no prompt after {BOOT_TIMEOUT_S}s: {output[-200:]!r}")
            output += console.read(1.0)
    return vm, time.monotonic() - started


def qemu_memory_mib(vm: VM) -> tuple[float, float]:
    """(RSS, anonymous RSS) of the VM's QEMU process in MiB.

    The rest of RSS is file-backed: QEMU mmaps the kernel and initrd, so those pages (and QEMU's
    own binary) are page cache shared by every VM on the host; anonymous memory is per VM.
    """
    pid = Path(f"/run/libvirt/qemu/{vm.name}.pid").read_text().strip()
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"] / 1024, fields["RssAnon"] / 1024


def restore_runs(vm: VM, runs: int) -> list[float]:
    """Seconds from start() of a managed-saved VM to its first answered agent command."""
    times = []
    for _ in range(runs):
        vm.managed_save()
        started = time.monotonic()
        vm.start()
        vm.wait_ready(BOOT_TIMEOUT_S)
        vm.exec("true")
        times.append(time.monotonic() - started)
    return times


def summary(name: str, values: list[float], unit: str, scale: float = 1.0) -> str:
    """One aligned line: median, p95, min, max, n."""
    v = [x * scale for x in values]
    return (
        f"{name:<28} median {statistics.median(v):8.2f} {unit:<3}  p95 {p95(v):8.2f}  "
        f"min {min(v):8.2f}  max {max(v):8.2f}  n={len(v)}"
    )


def main() -> None:
    """Run the benchmark and print the table and the RESULT line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="2 runs (1 if the host is loaded), under 60 s")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    args = parser.parse_args()
    runs = 2 if args.quick else max(args.runs, 1)
    image_dir = args.image.resolve()
    bare, boots, ready, execs, steady, rss, anon = [], [], [], [], [], [], []
    restores: list[float] = []
    t0 = time.monotonic()
    # --quick must end within a minute even when other VMs load the host: no new run after 30 s.
    budget_s = 30.0 if args.quick else float("inf")
    with Hypervisor.connect() as hv:
        choice = hv.accelerator(load_image(image_dir))
        print(f"image {image_dir.name}  accelerator {choice.accelerator} ({choice.reason})  runs {runs}")
        for run in range(runs):
            bare.append(bare_boot(image_dir))
            vm, boot_s = libvirt_boot(hv, image_dir)
            try:
                boots.append(boot_s)
                ready.append(vm.wait_ready(BOOT_TIMEOUT_S))
                started = time.monotonic()
                vm.exec("true")
                execs.append(time.monotonic() - started)
                for _ in range(3):  # later commands find QEMU's translation cache warm
                    started = time.monotonic()
                    vm.exec("true")
                    steady.append(time.monotonic() - started)
                time.sleep(1.0 if args.quick else 2.0)  # let boot activity settle before sampling memory
                total, own = qemu_memory_mib(vm)
                rss.append(total)
                anon.append(own)
                if run == 0:
                    restores = restore_runs(vm, 1 if args.quick else 3)
            finally:
                vm.destroy()
            if time.monotonic() - t0 > budget_s:
                print(f"stopping after {run + 1} runs: --quick budget of {budget_s:.0f} s used")
                break
        total_mib, free_mib = hv.capacity().total_mem_mib, hv.capacity().free_mem_mib
    print(summary("bare QEMU boot to prompt", bare, "s"))
    print(summary("libvirt define+start→prompt", boots, "s"))
    print(summary("agent ready after prompt", ready, "s"))
    print(summary("first agent command", execs, "ms", 1000))
    print(summary("later agent commands", steady, "ms", 1000))
    print(summary("managed-save resume→exec", restores, "s"))
    print(summary("idle VM RSS", rss, "MiB"))
    print(summary("idle VM anonymous RSS", anon, "MiB"))
    usable = total_mib - HOST_RESERVE_MIB
    # File-backed pages (kernel, initrd, QEMU binary) are page cache shared by all VMs: once per host.
    shared = statistics.median(rss) - statistics.median(anon)
    print(
        f"idle 128 MiB VMs that fit in {total_mib} MiB (reserve {HOST_RESERVE_MIB}): "
        f"{int(usable // statistics.median(rss))} counting full RSS each, "
        f"{int((usable - shared) // statistics.median(anon))} counting shared pages once; free now {free_mib} MiB"
    )
    print(f"wall time {time.monotonic() - t0:.1f} s")
    bare_s, libvirt_s = statistics.median(bare), statistics.median(boots)
    print(
        f"RESULT bare_boot_s={bare_s:.2f} libvirt_boot_s={libvirt_s:.2f} ratio={libvirt_s / bare_s:.2f} "
        f"exec_ms={statistics.median(execs) * 1000:.1f} idle_rss_mib={statistics.median(rss):.1f}"
    )


if __name__ == "__main__":
    main()
