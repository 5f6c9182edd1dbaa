"""A host that stopped answering (its advert gone for LABS_HOST_LOST_S): every session there that
holds or awaits a VM fails with a message; hosts that still advertise, and other hosts' sessions,
are left alone. (The same with real agents and VMs: bench/faults.py --two-hosts.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from pytest_django import Settings

from labs.models import LabSession
from labs.services.lost_hosts import LOST_MESSAGE, end_sessions_on_lost_hosts
from labs.states import SessionState
from tests import lab_stack, servers

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
S = SessionState


@pytest.fixture
def redis_url(settings: Settings) -> Iterator[str]:
    with servers.private_redis() as url:
        lab_stack.point_settings_at_redis(settings, url)
        yield url


def session(user: User, host: str, state: SessionState) -> LabSession:
    return LabSession.objects.create(user=user, lab_slug="x", host=host, vm_id=f"vm-{host}-{state}", state=state)


def test_sessions_of_a_host_silent_past_the_limit_fail_with_a_message(
    alice: User, redis_url: str, settings: Settings, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    settings.LABS_HOST_LOST_S = 0
    lab_stack.advertise_host("alive")
    on_lost = [session(alice, "gone", state) for state in (S.REQUESTED, S.PROVISIONING, S.READY, S.RESETTING)]
    elsewhere = session(alice, "alive", S.READY)
    already_over = session(alice, "gone", S.COMPLETED)
    with django_capture_on_commit_callbacks(execute=False):
        ended = end_sessions_on_lost_hosts()
    assert sorted(ended) == sorted(s.id for s in on_lost)
    for lost in on_lost:
        lost.refresh_from_db()
        assert (lost.state, lost.error) == (S.FAILED, LOST_MESSAGE)
    elsewhere.refresh_from_db()
    already_over.refresh_from_db()
    assert (elsewhere.state, already_over.state) == (S.READY, S.COMPLETED)


def test_a_host_is_lost_only_after_being_silent_for_the_limit(
    alice: User, redis_url: str, settings: Settings, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    settings.LABS_HOST_LOST_S = 3600
    waiting = session(alice, "restarting", S.READY)
    with django_capture_on_commit_callbacks(execute=False):
        assert end_sessions_on_lost_hosts() == []  # first seen silent now: not lost yet
        lab_stack.advertise_host("restarting")  # back (its advert refreshed): the clock is reset
        assert end_sessions_on_lost_hosts() == []
    waiting.refresh_from_db()
    assert waiting.state == S.READY
