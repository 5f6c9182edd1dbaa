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
from labs.redis_names import session_keys
from labs.states import SessionState
from tests import lab_stack

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


@pytest.fixture
def redis_url(settings: Any, tmp_path: Path) -> Iterator[str]:
    with lab_stack.private_redis() as url:
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
