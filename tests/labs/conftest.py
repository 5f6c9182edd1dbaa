"""Fixtures for lab tests: the guest image, libvirt, and booted VMs of a lab's profile.

The hypervisor tests' fixtures (libvirt setup, one connection per module, image build) are
reused so that both suites boot VMs the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from labs.hypervisor import VM
from tests.browser_fixtures import ARTIFACTS
from tests.hypervisor.conftest import boot_vm, guest_image, hv, libvirt_ready

__all__ = ["boot_vm", "guest_image", "hv", "libvirt_ready"]

# Each lab's automatic solve: seconds solving (setup, checks, solutions), seconds in all (with the
# checkpoint round trips; boot excluded), steps, whether it passed. Printed at the end of the run
# and kept in test-artifacts/lab-solve-times.json.
SOLVE_TIMES: dict[str, tuple[float, float, int, bool]] = {}


@pytest.fixture(scope="module")
def booted_vm(boot_vm: Callable[[str], VM]) -> Callable[[str], VM]:
    """Factory: a fresh VM of a vetted profile, agent ready; destroyed after the module."""
    return boot_vm


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SOLVE_TIMES:
        terminalreporter.section("lab solve times")
        for slug, (solving, total, steps, passed) in SOLVE_TIMES.items():
            verdict = "solved" if passed else "FAILED"
            terminalreporter.write_line(
                f"{slug}: {steps} steps {verdict} in {solving:.1f} s; {total:.1f} s with every checkpoint"
                " taken, restored and solved again (boot excluded)"
            )
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "lab-solve-times.json").write_text(
            json.dumps(
                {
                    slug: {"solve_s": round(solving, 1), "total_s": round(total, 1), "steps": n, "passed": ok}
                    for slug, (solving, total, n, ok) in SOLVE_TIMES.items()
                },
                indent=2,
            )
        )
