"""A VM task touches Redis for terminal niceties (holding keystrokes while step 1's checkpoint is
taken, waking the console relay): with Redis restarting, those are skipped with a warning rather
than failing the learner's start; a hold whose release was lost is released by the reconciler."""

from __future__ import annotations

import pytest
from pytest_django import Settings

from labs.host import console_relay
from tests import servers


def test_terminal_niceties_do_not_fail_a_task_while_redis_is_away(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{servers.free_port()}/0"  # nothing listens there
    console_relay.hold_input("s-1")
    console_relay.wake("host-1")
    console_relay.release_input("s-1")
    assert caplog.text.count("Redis unavailable") == 3
