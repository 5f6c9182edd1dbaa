"""The services under the workers fail while a learner works: libvirtd and Redis restart, a web
worker dies. The lab keeps running, its terminal comes back with its scrollback, checks work."""

from __future__ import annotations

import pytest

from tests.faults import service_faults
from tests.faults.drill import Drill

pytestmark = [pytest.mark.vm, pytest.mark.slow]


def test_libvirtd_restart_keeps_the_lab_and_its_checks_and_reattaches_its_console(drill: Drill) -> None:
    _client, sid = drill.ready_session()
    outcome = service_faults.libvirtd_restarted(drill, sid)
    assert outcome.ok, outcome
    # libvirtd dying under a running check: the check is retried, not the lab failed.
    outcome = service_faults.libvirtd_killed_mid_check(drill, sid)
    assert outcome.ok, outcome
    # And a web worker dying under the same learner's open sockets costs them nothing either.
    outcome = service_faults.web_worker_killed(drill, sid)
    assert outcome.ok, outcome


def test_redis_restart_keeps_the_lab_its_scrollback_and_its_checks(drill: Drill) -> None:
    _client, sid = drill.ready_session()
    outcome = service_faults.redis_restarted(drill, sid)
    assert outcome.ok, outcome
