"""A host worker killed with SIGKILL (no warm shutdown, nothing acknowledged) in the middle of a
session's life, then restarted: the learner always ends up with a clear state, and nothing is
left behind on the host (tests/faults/scenarios.py has every phase; bench/faults.py runs them all)."""

from __future__ import annotations

import pytest

from tests.faults import scenarios
from tests.faults.drill import Drill
from tests.faults.stack import S

pytestmark = [pytest.mark.vm, pytest.mark.slow]


def test_agent_killed_while_provisioning_fails_the_session_and_reaps_its_vm(drill: Drill) -> None:
    outcome = scenarios.killed_while_provisioning(drill)
    assert outcome.phase.startswith(S.PROVISIONING), outcome
    assert outcome.ok, outcome
    # Failed by the restarted agent itself, not by the periodic provision timeout (60 s here).
    assert outcome.recovery_s < 60, outcome


def test_agent_killed_while_taking_the_first_checkpoint_finishes_it_and_releases_the_terminal(drill: Drill) -> None:
    # The checkpoint takes a fraction of a second: try again if the kill came after it.
    for _attempt in range(3):
        outcome = scenarios.killed_while_checkpointing(drill)
        if outcome.phase == "checkpointing":
            break
    assert outcome.phase == "checkpointing", outcome
    assert outcome.ok, outcome


def test_work_that_found_its_worker_dead_is_done_once_the_worker_is_back(drill: Drill) -> None:
    # A start placed on a host whose agent had just died waits, then starts when it returns...
    outcome = scenarios.killed_while_requested(drill)
    assert outcome.phase == S.REQUESTED, outcome
    assert outcome.ok, outcome
    # ...and a check whose worker dies mid-check runs again when it is back: the page gets a verdict.
    outcome = scenarios.killed_while_checking(drill, outcome.session)
    assert outcome.phase == "checking", outcome
    assert outcome.ok, outcome
