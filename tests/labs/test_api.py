"""The JSON API at /api/: who may do what to a session, and the errors a learner sees."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from pytest_django import Settings

from labs.models import LabSession
from labs.states import SessionState
from tests import lab_stack, servers
from tests.labs.conftest import SentTask

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
ACTIONS = [("check", {"step": 1}), ("goto", {"step": 1}), ("reset", None), ("extend", None), ("stop", None)]


@pytest.fixture
def lab_world(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """A private Redis with one advertised host, and a catalog holding the test lab."""
    with servers.private_redis() as url:
        lab_stack.point_settings_at_redis(settings, url)
        settings.CONTENT_DIR = tmp_path / "content"
        settings.VIRTLAB_HOST_NAME = "apitest"
        slug = lab_stack.write_test_lab(settings.CONTENT_DIR)
        lab_stack.advertise_host("apitest")
        yield slug


def login(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


def start(client: Client, slug: str) -> Any:
    return client.post("/api/sessions", {"lab": slug}, content_type="application/json")


def test_labs_are_listed_for_anyone(client: Client, lab_world: str) -> None:
    body = client.get("/api/labs").json()
    assert [lab["slug"] for lab in body] == [lab_world]
    assert body[0]["steps"] == 2


def test_openapi_docs_are_served(client: Client, lab_world: str) -> None:
    assert client.get("/api/docs").status_code == 200
    assert "/api/sessions/{session_id}/check" in client.get("/api/openapi.json").json()["paths"]


def test_start_places_session_on_advertised_host(client: Client, alice: User, lab_world: str,
                                                  sent_tasks: list[SentTask],
                                                  django_capture_on_commit_callbacks: Any) -> None:  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        resp = start(login(client, alice), lab_world)
    assert resp.status_code == 201
    session = LabSession.objects.get(pk=resp.json()["id"])
    assert (session.state, session.host, session.user) == (SessionState.REQUESTED, "apitest", alice)
    assert sent_tasks == [SentTask("labs.host.tasks.provision_session", "host.apitest", (session.id,), {})]


def test_anonymous_cannot_start(client: Client, lab_world: str) -> None:
    assert start(client, lab_world).status_code == 401


def test_unknown_lab_is_404(client: Client, alice: User, lab_world: str) -> None:
    resp = start(login(client, alice), "no-such-lab")
    assert resp.status_code == 404
    assert "no-such-lab" in resp.json()["detail"]


def test_second_running_lab_is_409_naming_the_first(client: Client, alice: User, lab_world: str) -> None:
    first = start(login(client, alice), lab_world).json()
    resp = start(client, lab_world)
    assert resp.status_code == 409
    assert resp.json()["session"] == first["id"]


def test_start_rate_limit_is_429(client: Client, alice: User, lab_world: str, settings: Settings) -> None:
    settings.LABS_START_RATE = 2
    login(client, alice)
    for _ in range(2):
        session = start(client, lab_world).json()
        assert client.post(f"/api/sessions/{session['id']}/stop").status_code == 200
    resp = start(client, lab_world)
    assert resp.status_code == 429
    assert "Too many" in resp.json()["detail"]


def test_full_hosts_queue_the_start_with_a_position(client: Client, alice: User, bob: User, lab_world: str,
                                                     settings: Settings) -> None:  # fmt: skip
    settings.LABS_MAX_VMS_PER_HOST = 1
    assert start(login(client, alice), lab_world).json()["state"] == "requested"
    body = start(login(Client(), bob), lab_world).json()
    assert body["state"] == "queued"
    assert body["queue_position"] == 1


def test_owner_reads_session_others_get_404(client: Client, alice: User, bob: User, lab_world: str) -> None:
    session_id = start(login(client, alice), lab_world).json()["id"]
    assert client.get(f"/api/sessions/{session_id}").json()["id"] == session_id
    other = login(Client(), bob).get(f"/api/sessions/{session_id}")
    missing = login(Client(), bob).get("/api/sessions/s-doesnotexist")
    assert other.status_code == missing.status_code == 404
    assert other.json() == missing.json()  # no hint that the session exists
    assert Client().get(f"/api/sessions/{session_id}").status_code == 401


@pytest.mark.parametrize(("action", "body"), ACTIONS)
def test_other_learner_cannot_act_on_session(client: Client, alice: User, bob: User, lab_world: str,
                                             action: str, body: Any) -> None:  # fmt: skip
    session_id = start(login(client, alice), lab_world).json()["id"]
    resp = login(Client(), bob).post(f"/api/sessions/{session_id}/{action}", body, content_type="application/json")
    assert resp.status_code == 404
    assert LabSession.objects.get(pk=session_id).state == SessionState.REQUESTED


@pytest.mark.parametrize(("action", "body"), ACTIONS)
def test_anonymous_cannot_act_on_session(client: Client, alice: User, lab_world: str, action: str, body: Any) -> None:
    session_id = start(login(client, alice), lab_world).json()["id"]
    resp = Client().post(f"/api/sessions/{session_id}/{action}", body, content_type="application/json")
    assert resp.status_code == 401


def test_post_without_csrf_token_is_refused(alice: User, lab_world: str) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    resp = start(client, lab_world)
    assert resp.status_code == 403
    assert not LabSession.objects.exists()


def test_actions_on_a_session_that_is_not_ready_are_409(client: Client, alice: User, lab_world: str) -> None:
    session_id = start(login(client, alice), lab_world).json()["id"]
    resp = client.post(f"/api/sessions/{session_id}/check", {"step": 1}, content_type="application/json")
    assert resp.status_code == 409
    assert "ready" in resp.json()["detail"]


def test_extend_is_capped_at_the_maximum_lifetime(
    client: Client, alice: User, lab_world: str, settings: Settings
) -> None:
    from django.utils import timezone

    settings.LABS_EXTEND_S, settings.LABS_MAX_LIFETIME_S = 300, 900
    session_id = start(login(client, alice), lab_world).json()["id"]
    now = timezone.now()
    LabSession.objects.filter(pk=session_id).update(
        state=SessionState.READY, ready_at=now, expires_at=now + timedelta(seconds=300)
    )
    first = client.post(f"/api/sessions/{session_id}/extend")
    assert first.status_code == 200
    second = client.post(f"/api/sessions/{session_id}/extend").json()
    assert second["expires_at"] == (now + timedelta(seconds=900)).isoformat()
    third = client.post(f"/api/sessions/{session_id}/extend")
    assert third.status_code == 409
    assert "maximum" in third.json()["detail"]


def test_stop_destroys_and_enqueues_teardown(client: Client, alice: User, lab_world: str, sent_tasks: list[SentTask],
                                             django_capture_on_commit_callbacks: Any) -> None:  # fmt: skip
    session_id = start(login(client, alice), lab_world).json()["id"]
    sent_tasks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        body = client.post(f"/api/sessions/{session_id}/stop").json()
    assert body["state"] == "destroyed"
    assert sent_tasks == [  # destroy the VM on its host; start queued sessions
        SentTask("labs.host.tasks.destroy_session_vm", "host.apitest", (session_id,), {}),
        SentTask("labs.tasks.place_queued_sessions", "web", (), {}),
    ]
