"""Fixtures for the hypervisor layer tests: real libvirtd, real QEMU, the real guest image.

Works standalone (`pytest tests/hypervisor`): markers are registered here too, libvirtd is
prepared with scripts/setup-libvirt.sh (idempotent), and VMs are shared per module where the
tests do not interfere, because every boot costs seconds of CPU under TCG.
"""

from __future__ import annotations

import os
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labs.hypervisor import VM, Hypervisor
from tests import servers
from tests.guest.conftest import guest_image  # built (or reused) once per test session

__all__ = ["guest_image"]

REPO = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = REPO / "scripts" / "setup-libvirt.sh"
BOOT_TIMEOUT_S = 180.0  # TCG boots take 3-6 s alone, far longer when the 2 cores are shared


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vm: boots real QEMU guests through libvirt or bare QEMU")
    config.addinivalue_line("markers", "slow: takes more than a few seconds (still runs in CI)")


@pytest.fixture(scope="session")
def libvirt_ready() -> None:
    """libvirtd running with VirtLab's qemu.conf (root only)."""
    if os.geteuid() != 0:
        servers.unavailable("libvirtd (qemu:///system) and QEMU confinement need root")
    subprocess.run([str(SETUP_SCRIPT)], check=True, capture_output=True, timeout=180)


@pytest.fixture(scope="module")
def hv(libvirt_ready: None) -> Iterator[Hypervisor]:
    """One libvirt connection per test module."""
    with Hypervisor.connect() as hypervisor:
        yield hypervisor


def new_session_id() -> str:
    """A fresh session id, recognisable as a test's."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def boot_vm(hv: Hypervisor, guest_image: Path) -> Iterator[Callable[[str], VM]]:
    """Factory: boot a VM of the given profile, wait for its agent; all destroyed after the module."""
    booted: list[VM] = []

    def boot(profile: str) -> VM:
        vm = hv.create_vm(new_session_id(), profile, guest_image)
        booted.append(vm)
        vm.wait_ready(BOOT_TIMEOUT_S)
        return vm

    yield boot
    for vm in booted:
        vm.destroy()


@pytest.fixture(scope="module")
def tiny_vm(boot_vm: Callable[[str], VM]) -> VM:
    """A booted `tiny` VM shared by the tests of one module."""
    return boot_vm("tiny")


def parse_xml(text: str) -> ET.Element:
    """Parse XML produced by our own code or by libvirtd (never by users)."""
    return ET.fromstring(text)  # noqa: S314 - trusted: libvirtd's or our own output


def validate_domain_xml(xml: str, tmp_path: Path) -> None:
    """Fail unless libvirt's own schema accepts `xml` (virt-xml-validate)."""
    path = tmp_path / f"domain-{uuid.uuid4().hex[:8]}.xml"
    path.write_text(xml)
    proc = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
