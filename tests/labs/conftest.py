"""Fixtures for lab tests: the guest image, libvirt, and booted VMs of a lab's profile.

The hypervisor tests' fixtures (libvirt setup, one connection per module, image build) are
reused so that both suites boot VMs the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from celery.signals import before_task_publish

from labs.hypervisor import VM
from tests.browser_fixtures import ARTIFACTS
from tests.hypervisor.conftest import boot_vm, guest_image, hv, libvirt_ready

__all__ = ["SentTask", "boot_vm", "guest_image", "hv", "libvirt_ready"]

# Each lab's automatic solve: seconds solving (setup, checks, solutions), seconds in all (with the
# checkpoint round trips; boot excluded), steps, whether it passed. Printed at the end of the run
# and kept in test-artifacts/lab-solve-times.json.
SOLVE_TIMES: dict[str, tuple[float, float, int, bool]] = {}


@dataclass(frozen=True)
class SentTask:
    """A task message as it left for the broker: task name, queue, arguments."""

    name: str
    queue: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@pytest.fixture
def sent_tasks() -> Iterator[list[SentTask]]:
    """Every task message this test publishes, captured on its way to the broker (it still goes)."""
    sent: list[SentTask] = []

    def record(body: Any = None, routing_key: str = "", headers: Any = None, **_kwargs: Any) -> None:
        args, kwargs, _embed = body  # Celery's message protocol 2
        sent.append(SentTask(headers["task"], routing_key, tuple(args), dict(kwargs)))

    before_task_publish.connect(record, weak=False)
    try:
        yield sent
    finally:
        before_task_publish.disconnect(record)


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
                " taken and the revisited ones restored and solved again (boot excluded)"
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
