"""Fixtures for lab tests: the guest image, libvirt, and booted VMs of a lab's profile.

The hypervisor tests' fixtures (libvirt setup, one connection per module, image build) are
reused so that both suites boot VMs the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labs.hypervisor import VM, Hypervisor
from tests.hypervisor.conftest import BOOT_TIMEOUT_S, guest_image, hv, libvirt_ready, new_session_id

__all__ = ["guest_image", "hv", "libvirt_ready"]

# Seconds each lab took to solve automatically, printed at the end of the run.
SOLVE_TIMES: dict[str, tuple[float, int]] = {}


@pytest.fixture(scope="module")
def booted_vm(hv: Hypervisor, guest_image: Path) -> Iterator[Callable[[str], VM]]:
    """Factory: boot a fresh VM of a vetted profile and wait for its agent; destroyed after the module."""
    booted: list[VM] = []

    def boot(profile: str) -> VM:
        vm = hv.create_vm(new_session_id(), profile, guest_image)
        booted.append(vm)
        vm.wait_ready(BOOT_TIMEOUT_S)
        return vm

    yield boot
    for vm in booted:
        vm.destroy()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SOLVE_TIMES:
        terminalreporter.section("lab solve times")
        for slug, (seconds, steps) in SOLVE_TIMES.items():
            terminalreporter.write_line(f"{slug}: {steps} steps solved in {seconds:.1f} s (boot excluded)")
