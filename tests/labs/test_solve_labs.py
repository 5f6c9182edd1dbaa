"""Every shipped lab, solved automatically in a clean VM of its profile.

For each step in order: setup, the step's checkpoint is taken (as the lab engine does), the check
must fail (the step is not already done), the solution runs, the check must pass. Then (see
_revisit) the VM goes back to the checkpoint, as "Back to this step" does: the check must fail
again, and the solution must work again on the restored VM. One VM per lab, so state carries
over from step to step exactly as it does for a learner.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from labs.catalog import Lab, Step, load_catalog
from labs.host.verify import CheckResult, run_check, run_setup, run_solution
from labs.host.vmwork import BOOT_TIMEOUT_S, checkpoint
from labs.hypervisor import VM

from .conftest import SOLVE_TIMES

CATALOG = load_catalog()
pytestmark = [pytest.mark.vm, pytest.mark.slow]


def _explain(result: CheckResult) -> str:
    return "; ".join(f"[{'ok' if r.ok else 'FAIL'} {r.kind}] {r.message.en} ({r.detail})" for r in result.results)


def test_shipped_labs_are_all_valid() -> None:
    assert [str(e) for e in CATALOG.errors] == []
    assert {"first-contact", "qemu-img"} <= set(CATALOG.labs)


def _solve(vm: VM, step: Step, when: str) -> None:
    before = run_check(vm, step)
    assert not before.passed, f"step {step.number} {step.name} passes before its solution{when}: {_explain(before)}"
    run_solution(vm, step)
    after = run_check(vm, step)
    assert after.passed, f"step {step.number} {step.name} fails after its solution{when}: {_explain(after)}"


# The vfio lab's checkpoints revisited in CI: edu bound to vfio-pci, BAR0 mapped through VFIO, and
# a DMA done (each a kind of device state device_state.py carries across a revert), and the last.
# VIRTLAB_REVISIT_ALL=1 revisits every one (about 90 s more under TCG).
VFIO_REVISITS = {3, 6, 8}


def _revisit(lab: Lab, step: Step) -> bool:
    """Whether to go back to this step's checkpoint. The last step everywhere (where the most state
    has built up): elsewhere the guest is RAM and qcow2 disks, which the snapshot holds whole. In
    the vfio profile, whose emulated devices hold state a snapshot may lose (see
    labs/hypervisor/device_state.py), also a step of each kind of device state."""
    if step.number == len(lab.steps) or os.environ.get("VIRTLAB_REVISIT_ALL") == "1":
        return True
    return lab.profile == "vfio" and step.number in VFIO_REVISITS


@pytest.mark.parametrize("slug", sorted(CATALOG.labs))
def test_lab_solves_step_by_step(slug: str, booted_vm: Callable[[str], VM]) -> None:
    lab = CATALOG.labs[slug]
    vm = booted_vm(lab.profile)
    started = time.monotonic()
    solving = 0.0  # setup + check + solution + check of each step, as a learner's run needs
    passed = False
    try:
        for step in lab.steps:
            step_started = time.monotonic()
            run_setup(vm, step)
            setup_done = time.monotonic()
            vm.snapshot(checkpoint(step.number))  # as the lab engine does when a step begins
            solve_started = time.monotonic()
            _solve(vm, step, "")
            solving += (setup_done - step_started) + (time.monotonic() - solve_started)
            if _revisit(lab, step):
                vm.revert(checkpoint(step.number))
                vm.wait_ready(BOOT_TIMEOUT_S)
                _solve(vm, step, " after going back to its checkpoint")
        passed = True
    finally:
        SOLVE_TIMES[slug] = (solving, time.monotonic() - started, len(lab.steps), passed)
        vm.destroy()  # one VM at a time: the next lab boots into a freed host
