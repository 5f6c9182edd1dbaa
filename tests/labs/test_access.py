"""Who may see and who may drive a lab session, on every surface: the API, the lab page, both
websockets (what each caller gets from every page, API route and websocket: test_access_matrix.py).

Alice owns the session and drives it; Bob, another learner, is told it does not exist (404, or
close 4403); Charlie, staff, observes it read-only (reads it, watches it, is refused its actions).
Every surface sends the same SessionOut.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from labs.models import LabSession, StepResult
from labs.redis_names import input_key
from labs.services.session_events import session_payload
from labs.states import SessionState
from tests import access_matrix
from tests.access_matrix import (
    client_for,
)
from tests.asgi_sockets import Socket, headers_for, redis_client, run
from tests.labs.conftest import SentTask

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
# The lab world (private Redis, test lab, advertised host), staff, and alice's ready session.
shared_redis, lab_world = access_matrix.shared_redis, access_matrix.lab_world
charlie, people, session = access_matrix.charlie, access_matrix.people, access_matrix.session
fast_passwords = access_matrix.fast_passwords  # autouse
# Each action on a session, its body, and what the owner gets back.
ACTIONS: dict[str, tuple[dict[str, int] | None, int]] = {
    "check": ({"step": 1}, 202),
    "goto": ({"step": 1}, 202),
    "reset": (None, 202),
    "extend": (None, 200),
    "stop": (None, 200),
}
# What the owner's action sends: the host task on the session's host, then placement on the web queue.
SENT: dict[str, list[tuple[str, str]]] = {
    "check": [("labs.host.tasks.check_session_step", "host.apitest.checks")],
    "goto": [("labs.host.tasks.revert_session", "host.apitest")],
    "reset": [("labs.host.tasks.revert_session", "host.apitest")],
    "extend": [],
    "stop": [("labs.host.tasks.destroy_session_vm", "host.apitest"), ("labs.tasks.place_queued_sessions", "web")],
}
WEBSOCKETS = ["events", "terminal"]
# A transactional DB: the consumers read it from their own thread.
websocket_db = pytest.mark.django_db(transaction=True)


def act(client: Client, session_id: str, action: str) -> Any:
    body, _ = ACTIONS[action]
    return client.post(f"/api/sessions/{session_id}/{action}", body, content_type="application/json")


def request(client: Client, session_id: str, endpoint: str) -> Any:
    """GET the session (endpoint "get"), or POST one of its actions."""
    return client.get(f"/api/sessions/{session_id}") if endpoint == "get" else act(client, session_id, endpoint)


def unchanged(session: LabSession) -> bool:
    """Still as the fixture made it: not checked (touched), restored, extended or stopped."""
    return LabSession.objects.filter(
        pk=session.pk, state=SessionState.READY, expires_at=session.expires_at, last_activity=None
    ).exists()


def embedded_session(html: str) -> Any:
    """The session the lab page hands its script (json_script), as the script reads it."""
    found = re.search(r'<script id="lab-session" type="application/json">(.*?)</script>', html, re.S)
    assert found, "the lab page embeds its session"
    return json.loads(found.group(1))


# --- The API -------------------------------------------------------------------------------------


def test_owner_reads_their_session(session: LabSession, alice: User) -> None:
    resp = client_for(alice).get(f"/api/sessions/{session.id}")
    assert resp.status_code == 200
    assert resp.json() == session_payload(session)


@pytest.mark.parametrize("action", ACTIONS)
def test_owner_drives_their_session(session: LabSession, alice: User, action: str, sent_tasks: list[SentTask],
                                    django_capture_on_commit_callbacks: Any) -> None:  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        resp = act(client_for(alice), session.id, action)
    assert resp.status_code == ACTIONS[action][1], resp.content
    assert [(t.name, t.queue) for t in sent_tasks] == SENT[action], "the session's host is told to act"
    assert not unchanged(session)


@pytest.mark.parametrize("endpoint", ["get", *ACTIONS])
def test_other_learner_is_told_the_session_does_not_exist(session: LabSession, bob: User, endpoint: str,
                                                          sent_tasks: list[SentTask],
                                                          django_capture_on_commit_callbacks: Any) -> None:  # fmt: skip
    client = client_for(bob)
    with django_capture_on_commit_callbacks(execute=True):
        resp = request(client, session.id, endpoint)
    missing = request(client, "s-doesnotexist", endpoint)
    assert resp.status_code == missing.status_code == 404
    assert resp.json() == missing.json() == {"detail": "Not found"}  # no hint that the session exists
    assert sent_tasks == []
    assert unchanged(session)


def test_staff_read_a_session(session: LabSession, charlie: User) -> None:
    resp = client_for(charlie).get(f"/api/sessions/{session.id}")
    assert resp.status_code == 200
    assert resp.json() == session_payload(session)


@pytest.mark.parametrize("action", ACTIONS)
def test_staff_cannot_drive_a_session(session: LabSession, charlie: User, action: str, sent_tasks: list[SentTask],
                                      django_capture_on_commit_callbacks: Any) -> None:  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        resp = act(client_for(charlie), session.id, action)
    assert resp.status_code == 403
    assert "observe" in resp.json()["detail"]
    assert sent_tasks == [], "nothing is sent to the host"
    assert unchanged(session)


@pytest.mark.parametrize("endpoint", ["get", *ACTIONS])
def test_anonymous_must_log_in(session: LabSession, endpoint: str) -> None:
    assert request(client_for(None), session.id, endpoint).status_code == 401
    assert unchanged(session)


def test_openapi_documents_session_out_for_every_session_response(client: Client, lab_world: str) -> None:
    paths = client.get("/api/openapi.json").json()["paths"]

    def schema(path: str, method: str, status: int) -> str:
        return str(paths[path][method]["responses"][str(status)]["content"]["application/json"]["schema"]["$ref"])

    session_path = "/api/sessions/{session_id}"
    assert schema("/api/sessions", "post", 201).endswith("/SessionOut")
    assert schema("/api/sessions", "post", 409).endswith("/AlreadyRunningOut")
    assert schema(session_path, "get", 200).endswith("/SessionOut")
    assert schema(session_path, "get", 404).endswith("/DetailOut")
    for action, (_, status) in ACTIONS.items():
        ok = schema(f"{session_path}/{action}", "post", status)
        assert ok.endswith("/SessionOut" if status == 200 else "/DetailOut"), action
        for refused in (401, 403, 404):
            assert schema(f"{session_path}/{action}", "post", refused).endswith("/DetailOut"), (action, refused)


# --- The lab page --------------------------------------------------------------------------------


def test_lab_page_embeds_the_owners_running_session(session: LabSession, alice: User) -> None:
    html = client_for(alice).get(f"/labs/{session.lab_slug}/").content.decode()
    assert embedded_session(html) == client_for(alice).get(f"/api/sessions/{session.id}").json()


@pytest.mark.parametrize("who", ["bob", "charlie", "anonymous"])
def test_lab_page_shows_no_one_elses_session(session: LabSession, bob: User, charlie: User, who: str) -> None:
    # Staff observe a learner's session on its websockets; the lab page is the visitor's own lab.
    visitor = {"bob": bob, "charlie": charlie, "anonymous": None}[who]
    html = client_for(visitor).get(f"/labs/{session.lab_slug}/").content.decode()
    assert embedded_session(html) is None
    assert session.id not in html


# --- The websockets ------------------------------------------------------------------------------


@websocket_db
def test_owner_watches_and_types(session: LabSession, alice: User) -> None:
    headers = headers_for(alice)

    async def scenario() -> None:
        events = Socket(f"/ws/sessions/{session.id}/events/", headers)
        assert (await events.connect())[0]
        assert (await events.text())["type"] == "session"
        terminal = Socket(f"/ws/sessions/{session.id}/terminal/", headers)
        assert (await terminal.connect())[0]
        assert (await terminal.text()) == {"type": "hello", "observer": False}
        await terminal.send_bytes(b"ls\r")
        await terminal.leave()

    run(scenario)
    popped = redis_client().blpop([input_key(session.id)], timeout=5)
    assert popped is not None, "the owner's keys reach the VM"
    assert popped[1] == b"ls\r"


@websocket_db
@pytest.mark.parametrize("kind", WEBSOCKETS)
def test_other_learner_is_refused_as_for_a_session_that_does_not_exist(session: LabSession, bob: User,
                                                                        kind: str) -> None:  # fmt: skip
    headers = headers_for(bob)

    async def scenario() -> None:
        assert await Socket(f"/ws/sessions/{session.id}/{kind}/", headers).connect() == (False, 4403)
        assert await Socket(f"/ws/sessions/s-doesnotexist/{kind}/", headers).connect() == (False, 4403)

    run(scenario)


@websocket_db
def test_staff_observe_read_only(session: LabSession, charlie: User) -> None:
    headers = headers_for(charlie)

    async def scenario() -> None:
        events = Socket(f"/ws/sessions/{session.id}/events/", headers)
        assert (await events.connect())[0]
        assert (await events.text())["type"] == "session"
        terminal = Socket(f"/ws/sessions/{session.id}/terminal/", headers)
        assert (await terminal.connect())[0]
        assert (await terminal.text()) == {"type": "hello", "observer": True}
        await terminal.send_bytes(b"reboot\r")
        await terminal.send_json({"type": "input", "data": "reboot\r"})
        await terminal.leave()

    run(scenario)
    assert redis_client().llen(input_key(session.id)) == 0, "an observer's keys never reach the VM"


@websocket_db
@pytest.mark.parametrize("kind", WEBSOCKETS)
def test_anonymous_is_refused(session: LabSession, kind: str) -> None:
    headers = headers_for(None)

    async def scenario() -> None:
        assert await Socket(f"/ws/sessions/{session.id}/{kind}/", headers).connect() == (False, 4403)

    run(scenario)


# --- One shape everywhere -------------------------------------------------------------------------


@websocket_db
@pytest.mark.parametrize("who", ["alice", "charlie"])
def test_websocket_payload_is_the_api_body(session: LabSession, alice: User, charlie: User, who: str) -> None:
    verdict = {"ok": False, "en": "no file", "zh": "没有文件", "detail": "missing"}
    StepResult.objects.create(session=session, step=1, passed=False, message="no file", details=[verdict])
    viewer = {"alice": alice, "charlie": charlie}[who]
    body = client_for(viewer).get(f"/api/sessions/{session.id}").json()
    headers = headers_for(viewer)
    pushed: dict[str, Any] = {}

    async def scenario() -> None:
        socket = Socket(f"/ws/sessions/{session.id}/events/", headers)
        assert (await socket.connect())[0]
        pushed.update(await socket.text())

    run(scenario)
    assert pushed == {"type": "session", "session": body}
    assert body["results"]["1"]["details"][0]["zh"] == "没有文件"
