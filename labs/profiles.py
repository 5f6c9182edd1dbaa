"""The vetted VM profiles: the only shapes of VM VirtLab ever creates.

Labs name a profile; they never supply XML, devices or QEMU arguments. Anything a profile adds to
the QEMU command line is a fixed constant here, reviewed with the code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """One VM shape: machine type, resources, devices and extra kernel arguments."""

    name: str
    machine: str  # "pc" or "q35"
    memory_mib: int
    vcpus: int = 1
    intel_iommu: bool = False
    edu_device: bool = False
    # Every profile gets a small qcow2 scratch disk (vda): internal snapshots (reset, step
    # checkpoints) need at least one qcow2 disk to hold the RAM state.
    scratch_disk_mib: int = 64
    extra_disks_mib: tuple[int, ...] = ()
    kernel_args: tuple[str, ...] = ()
    # TCG translation-block cache. QEMU's default grows towards 1 GiB (~+110 MiB RSS per idle
    # guest at 128 MiB). Measured here (tiny, loaded host): 8 MiB thrashes (boot 2x slower, a
    # guest-exec takes 300-700 ms), 16 MiB boots as fast as 32-128 MiB with ~20 ms execs at
    # +9 MiB RSS over 8 MiB, so 16 it is.
    tcg_tb_cache_mib: int = 16

    @property
    def disk_count(self) -> int:
        """Number of disks attached (scratch + extras)."""
        return 1 + len(self.extra_disks_mib)


# page_reporting_order=0: report freed pages of any size, not only whole 2 MiB blocks (the
# default), which a 128 MiB guest rarely has free after boot: without it reporting returned nothing.
BASE_KERNEL_ARGS: tuple[str, ...] = ("console=ttyS0", "quiet", "panic=-1", "page_reporting.page_reporting_order=0")

# The only extra QEMU arguments any profile may use: libvirt 9.0 has no element for the `edu`
# teaching device, so it goes through <qemu:commandline> with exactly these values. QEMU creates
# it before libvirt's own PCI devices, so it gets a fixed slot libvirt's allocator never reaches
# (libvirt packs q35 root ports from slot 1 upwards).
EDU_QEMU_ARGS: tuple[str, ...] = ("-device", "edu,bus=pcie.0,addr=0x10")

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(name="tiny", machine="pc", memory_mib=128),
        Profile(
            name="vfio",
            machine="q35",
            memory_mib=256,
            intel_iommu=True,
            edu_device=True,
            kernel_args=("intel_iommu=on", "iommu=pt"),
        ),
        Profile(name="storage", machine="pc", memory_mib=128, extra_disks_mib=(256, 256)),
        Profile(name="container", machine="pc", memory_mib=256, scratch_disk_mib=512),
    )
}


# QEMU's own cost on top of guest RAM (TCG cache, device state, ROM copies of kernel/initrd),
# from bench/vm.py: idle RSS of a 128 MiB guest minus its RAM, rounded up. Here, not in the
# hypervisor package, because the web side budgets with it too (a class's admission control).
QEMU_OVERHEAD_MIB = 48


def vm_cost_mib(profile: Profile) -> int:
    """Host memory one running VM of `profile` is budgeted to use."""
    return profile.memory_mib + QEMU_OVERHEAD_MIB


def get_profile(name: str) -> Profile:
    """Return the vetted profile called `name`; KeyError names the valid choices."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown VM profile {name!r}; choose one of {sorted(PROFILES)}") from None


def kernel_cmdline(profile: Profile) -> str:
    """The guest kernel command line for `profile`."""
    return " ".join(BASE_KERNEL_ARGS + profile.kernel_args)
