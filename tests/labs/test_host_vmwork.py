"""Host-side session work that needs no VM: what tearing a session down leaves behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User

from labs.host import vmwork
from labs.models import LabSession
from labs.redis_names import hold_key, session_keys
from labs.services.transitions import transition
from labs.states import SessionState
from tests import lab_stack, servers

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture
def redis_url(settings: Any, tmp_path: Path) -> Iterator[str]:
    with servers.private_redis() as url:
        lab_stack.point_settings_at_redis(settings, url)
        yield url


def test_destroying_a_session_deletes_its_terminal_keys_at_once(redis_url: str, alice: User) -> None:
    session = LabSession.objects.create(user=alice, lab_slug="x", state=SessionState.COMPLETED, host="h1")
    other = LabSession.objects.create(user=alice, lab_slug="x", state=SessionState.READY, host="h1")
    client = redis.Redis.from_url(redis_url)
    for key in [*session_keys(session.id), *session_keys(other.id)]:
        client.set(key, b"scrollback or keystrokes", ex=24 * 3600)
    vmwork.destroy(session.id)
    session.refresh_from_db()
    assert session.state == SessionState.DESTROYED
    assert client.exists(*session_keys(session.id)) == 0
    assert client.exists(*session_keys(other.id)) == len(session_keys(other.id)), "another session keeps its keys"


def test_keystrokes_are_held_before_the_session_turns_provisioning(
    redis_url: str, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay attaches when it sees a session provisioning: keys typed early must find the hold
    already there, or they reach a VM still booting (whose serial port drops the first ones)."""
    session = LabSession.objects.create(user=alice, lab_slug="x", state=SessionState.REQUESTED, host="h1")
    client = redis.Redis.from_url(redis_url)
    held_at_transition = []

    def watched(session_id: str, to: SessionState, **fields: Any) -> bool:
        held_at_transition.append((to, client.exists(hold_key(session_id))))
        return transition(session_id, to, **fields)

    monkeypatch.setattr("labs.host.vmwork.transition", watched)
    assert vmwork._begin_provisioning(session.id)
    assert held_at_transition == [(SessionState.PROVISIONING, 1)]
    session.refresh_from_db()
    assert session.state == SessionState.PROVISIONING


def test_a_duplicate_delivery_leaves_the_input_as_it_found_it(redis_url: str, alice: User) -> None:
    client = redis.Redis.from_url(redis_url)
    ready = LabSession.objects.create(user=alice, lab_slug="x", state=SessionState.READY, host="h1")
    assert not vmwork._begin_provisioning(ready.id)
    assert not client.exists(hold_key(ready.id)), "a ready session's keystrokes are not held"
    # Another worker is provisioning this one: its hold stays until it releases it.
    busy = LabSession.objects.create(user=alice, lab_slug="x", state=SessionState.PROVISIONING, host="h1")
    client.set(hold_key(busy.id), 1, ex=300)
    assert not vmwork._begin_provisioning(busy.id)
    assert client.exists(hold_key(busy.id))
