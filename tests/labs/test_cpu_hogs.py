"""A VM that keeps its core busy gets a lower CPU weight, and its weight back once calm."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from pytest_django import Settings

from labs.host.cpu_hogs import HOG_WEIGHT_DIVISOR, CpuHogs
from labs.hypervisor import VM, Hypervisor

S = 1_000_000_000  # ns


@pytest.fixture(autouse=True)
def _hog_after_10_s(settings: Settings) -> None:
    settings.LABS_CPU_HOG_AFTER_S = 10
    settings.LABS_CPU_HOG_PCT = 50


def test_busy_for_the_whole_window_is_lowered_and_calm_as_long_is_restored() -> None:
    hogs = CpuHogs()

    def at(second: int, spinning: float, typing: float, two_vcpus: float) -> tuple[list[str], list[str]]:
        """Each VM's CPU time so far, in seconds of one core."""
        times = {"spin": (int(spinning * S), 1), "type": (int(typing * S), 1), "two": (int(two_vcpus * S), 2)}
        lower, restore = hogs.changes(times, float(second))
        return sorted(lower), sorted(restore)

    # 90 % of one core, 10 %, and 60 % of two vCPUs; second 0 only sets each one's baseline.
    for second in range(11):
        assert at(second, 0.9 * second, 0.1 * second, 1.2 * second) == ([], []), second
    assert at(11, 9.9, 1.1, 13.2) == (["spin", "two"], []), "busy for 10 s: lowered"
    for vm_id in ("spin", "two"):
        hogs.tracks[vm_id].weight_before = 1024  # what tick() records once it has lowered them
    assert at(12, 10.8, 1.2, 14.4) == ([], []), "lowered already"
    # Calm (under a quarter of their cores) from second 13: restored after 10 s of it.
    for second in range(13, 23):
        assert at(second, 10.8, 1.2, 14.4) == ([], []), second
    assert at(23, 10.8, 1.2, 14.4) == ([], ["spin", "two"])
    hogs.changes({"spin": (int(10.8 * S), 1)}, 24.0)
    assert set(hogs.tracks) == {"spin"}, "VMs that stopped are forgotten"


def test_a_busy_spell_shorter_than_the_window_starts_over() -> None:
    hogs = CpuHogs()
    used = 0
    for second in range(30):
        used += S if second % 9 else 0  # an idle second every 9: never 10 s busy in a row
        assert hogs.changes({"vm": (used, 1)}, float(second)) == ([], [])


@pytest.mark.vm
def test_a_spinning_guest_yields_its_cpu_weight_and_gets_it_back(
    booted_vm: Callable[[str], VM], hv: Hypervisor, settings: Settings
) -> None:
    # Low bars: on a loaded CI host a spinning guest may get well under a core.
    settings.LABS_CPU_HOG_AFTER_S = 2
    settings.LABS_CPU_HOG_PCT = 20
    vm = booted_vm("tiny")
    weight = vm.cpu_weight()
    hogs = CpuHogs()

    def tick_until(done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 60
        while not done():
            assert time.monotonic() < deadline, what
            hogs.tick(hv, time.monotonic(), namespace=(vm.session_id,))
            time.sleep(0.5)

    spin = threading.Thread(target=lambda: vm.exec("timeout 15 sh -c 'while :; do :; done'", timeout_s=60))
    spin.start()
    try:
        tick_until(lambda: vm.cpu_weight() < weight, "the spinning VM's weight lowered")
        assert vm.cpu_weight() == max(2, weight // HOG_WEIGHT_DIVISOR)
    finally:
        spin.join()
    tick_until(lambda: vm.cpu_weight() == weight, "its weight back once it is calm")
