"""Pushing a session change to its page is best effort: the change is in the DB, and a page reloads
it when it reconnects. A web process whose pooled Redis connection died with a Redis restart
fails its next push once; that must not fail the learner's action (a 500 on Stop) nor skip the
on-commit sends queued after the push (the VM's teardown)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.db import transaction

from labs.models import LabSession
from labs.services import session_events
from labs.services.transitions import transition
from labs.states import SessionState


class FlakyLayer:
    """A channel layer whose first `failures` sends fail as a stale Redis connection does."""

    def __init__(self, failures: int):
        self.failures = failures
        self.sent: list[str] = []

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise redis.ConnectionError("Connection closed by server.")
        self.sent.append(group)


@pytest.fixture
def session(alice: User) -> LabSession:
    return LabSession.objects.create(user=alice, lab_slug="x", state=SessionState.READY, host="h", vm_id="v")


@pytest.mark.parametrize("failures", [1, 5])
def test_a_failed_push_neither_fails_the_transition_nor_the_sends_after_it(
    session: LabSession, failures: int, monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:  # fmt: skip
    layer = FlakyLayer(failures)
    monkeypatch.setattr(session_events, "get_channel_layer", lambda: layer)
    after: list[str] = []
    with django_capture_on_commit_callbacks(execute=True):
        assert transition(session.id, SessionState.DESTROYED)
        transaction.on_commit(lambda: after.append("teardown sent"))
    assert after == ["teardown sent"]
    session.refresh_from_db()
    assert session.state == SessionState.DESTROYED
    if failures == 1:  # a stale connection: the retry, on a fresh one, delivers
        assert layer.sent
