"""Fixtures for lab tests: the guest image, libvirt, and booted VMs of a lab's profile.

The hypervisor tests' fixtures (libvirt setup, one connection per module, image build) are
reused so that both suites boot VMs the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from labs.hypervisor import VM
from tests.hypervisor.conftest import boot_vm, guest_image, hv, libvirt_ready

__all__ = ["boot_vm", "guest_image", "hv", "libvirt_ready"]

# Seconds each lab took to solve automatically, printed at the end of the run.
SOLVE_TIMES: dict[str, tuple[float, int]] = {}


@pytest.fixture(scope="module")
def booted_vm(boot_vm: Callable[[str], VM]) -> Callable[[str], VM]:
    """Factory: a fresh VM of a vetted profile, agent ready; destroyed after the module."""
    return boot_vm


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SOLVE_TIMES:
        terminalreporter.section("lab solve times")
        for slug, (seconds, steps) in SOLVE_TIMES.items():
            terminalreporter.write_line(f"{slug}: {steps} steps solved in {seconds:.1f} s (boot excluded)")
