"""Fixtures of the fault suite: one stack for the whole package (its start costs ~15 s), with the
host `alpha` in a box of its own (tests/faults/hosts.py) sized for 2 VMs. (The two-host case, with
`beta` sized for 4, runs in bench/faults.py --two-hosts.)

The suite needs root (mount namespaces, a private libvirtd), libvirt and the guest image.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests import servers
from tests.faults.drill import Drill, stop_all
from tests.faults.stack import FaultStack, fault_stack
from tests.hypervisor.conftest import guest_image, libvirt_ready

__all__ = ["guest_image", "libvirt_ready"]

# 2 cores x LABS_TCG_VMS_PER_CPU: alpha holds 2 VMs.
ALPHA = "alpha"
CAPACITY = {ALPHA: "1"}


@pytest.fixture(scope="package")
def faults(tmp_path_factory: pytest.TempPathFactory, libvirt_ready: None, guest_image: Path) -> Iterator[FaultStack]:
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("unshare", "nsenter", "libvirtd", "virtlogd")):
        servers.unavailable("the fault suite runs hosts in mount namespaces with their own libvirtd: root")
    with fault_stack(tmp_path_factory.mktemp("faults")) as stack:
        stack.add_host(ALPHA, LABS_TCG_VMS_PER_CPU=CAPACITY[ALPHA])
        yield stack


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED] = True
    return report


FAILED = pytest.StashKey[bool]()


@pytest.fixture
def drill(request: pytest.FixtureRequest, faults: FaultStack) -> Iterator[Drill]:
    """The stack for one test; the sessions it leaves running are stopped after it. A failed test
    shows what its hosts' workers logged (their logs go with the stack's temporary directory)."""
    seen = {name: {role: len(box.log(role)) for role in ROLES} for name, box in faults.hosts.items()}
    yield Drill(faults)
    if request.node.stash.get(FAILED, False):
        for name, box in faults.hosts.items():
            for role in ROLES:
                lines = box.log(role)[seen.get(name, {}).get(role, 0) :].splitlines()
                notable = [line for line in lines if not QUIET.search(line[:80])]
                print(f"--- {name} {role} worker, during the test (INFO left out)", *notable[-120:], sep="\n")
    stop_all(Drill(faults))
    faults.settle(60)


ROLES = ("agent", "checks")
QUIET = re.compile(r"\b(INFO|DEBUG)\b")
