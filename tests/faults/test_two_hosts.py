"""Two hypervisor hosts (two agents with their own libvirtd on this machine): starts spread by
free capacity; a host that is lost fails its sessions with a message while new starts go to the
other; when it returns, what it left running is reaped."""

from __future__ import annotations

import pytest

from tests.faults import scenarios
from tests.faults.conftest import ALPHA, BETA, CAPACITY
from tests.faults.drill import Drill

pytestmark = [pytest.mark.vm, pytest.mark.slow]


def test_starts_spread_by_capacity_and_a_lost_host_fails_its_sessions_cleanly(drill: Drill) -> None:
    if BETA not in drill.stack.hosts:
        drill.stack.add_host(BETA, LABS_TCG_VMS_PER_CPU=CAPACITY[BETA])
    outcome = scenarios.two_hosts_spread_then_one_lost(drill, small=ALPHA, big=BETA)
    assert outcome.ok, outcome
