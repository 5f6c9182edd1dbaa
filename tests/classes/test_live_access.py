"""Who may use the instructor's live view: the grid (page and websocket), watching a learner's
terminal, and messages. One matrix per surface over the issue's six kinds of user:

instructor (owns the class), co-instructor, another instructor, a learner of the class, a learner of
another class, anonymous. The watched session is another learner's seat of the class, so "learner
of the class" asks for a classmate's terminal. Everything here runs the real ASGI application
(Origin check, auth, router, consumers) against a private Redis; no VM is needed to decide who.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from pytest_django import Settings

from classes.models import ClassAction, ClassMessage, LabClass, Seat
from labs.models import LabSession, StepResult
from labs.redis_names import input_key, size_key
from labs.services.session_events import push_session
from labs.states import SessionState
from tests.asgi_sockets import Socket, headers_for, redis_client, run
from tests.classes.conftest import HOST
from tests.conftest import make_user

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WHO = ["instructor", "co-instructor", "other instructor", "learner of the class", "learner of another class",
       "anonymous"]  # fmt: skip
TEACHERS = {"instructor", "co-instructor"}
ACCEPTED = 101


@dataclass
class World:
    klass: LabClass
    users: dict[str, User | None]
    watched: Seat  # a learner's seat of the class: the session everyone asks to watch
    own: Seat  # the seat of "learner of the class"
    other: Seat  # the seat of "learner of another class"
    # Each user's socket headers (a login: made before a scenario's event loop runs, not in it).
    logins: dict[str, list[tuple[bytes, bytes]]]

    def headers(self, who: str) -> list[tuple[bytes, bytes]]:
        return self.logins[who]


def seat_in(klass: LabClass, user: User) -> Seat:
    now = timezone.now()
    session = LabSession.objects.create(
        user=user, lab_slug=klass.lab_slug, state=SessionState.READY, host=HOST, vm_id="v", checkpoints=[1],
        ready_at=now, expires_at=now + timedelta(minutes=30),
    )  # fmt: skip
    seat = Seat.objects.create(klass=klass, user=user, session=session)
    seat.sessions.add(session)
    return seat


@pytest.fixture
def world(klass: LabClass, teacher: User, ta: User, rival: User) -> World:
    now = timezone.now()
    elsewhere = LabClass.objects.create(title="Other", owner=rival, labs=klass.labs, seats=2, starts_at=now,
                                        ends_at=now + timedelta(hours=1))  # fmt: skip
    lena, max_, otto = make_user("lena"), make_user("max"), make_user("otto")
    users: dict[str, User | None] = {
        "instructor": teacher, "co-instructor": ta, "other instructor": rival, "learner of the class": lena,
        "learner of another class": otto, "anonymous": None,
    }  # fmt: skip
    users["watched learner"] = max_
    logins = {who: headers_for(user) for who, user in users.items()}
    return World(klass, users, watched=seat_in(klass, max_), own=seat_in(klass, lena), other=seat_in(elsewhere, otto),
                 logins=logins)  # fmt: skip


# --- The grid ------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", WHO)
def test_grid_socket_opens_for_the_class_teachers_only(world: World, who: str) -> None:
    outcome: list[object] = []

    async def scenario() -> None:
        socket = Socket(f"/ws/classes/{world.klass.pk}/live/", world.headers(who))
        accepted, code = await socket.connect()
        outcome.append(ACCEPTED if accepted else code)
        if accepted:
            grid = await socket.text()
            outcome.append((grid["type"], sorted(row["user"] for row in grid["rows"])))

    run(scenario)
    if who in TEACHERS:
        assert outcome == [ACCEPTED, ("grid", ["lena", "max"])]
    else:
        assert outcome == [4403]


def test_grid_socket_of_a_class_that_does_not_exist_is_refused_alike(world: World) -> None:
    async def scenario() -> None:
        assert await Socket("/ws/classes/987654/live/", world.headers("instructor")).connect() == (False, 4403)

    run(scenario)


@pytest.mark.parametrize("who", WHO)
def test_grid_page_is_the_class_teachers_only(world: World, who: str) -> None:
    client, user = Client(), world.users[who]
    if user is not None:
        client.force_login(user)
    response = client.get(f"/classes/{world.klass.pk}/live")
    expected = 200 if who in TEACHERS else 302 if who == "anonymous" else 404
    assert response.status_code == expected
    if expected == 200:
        assert b'id="live-grid"' in response.content
        assert b"otto" not in response.content  # another class's learner is nowhere on it


def test_a_seat_change_reaches_the_grid_with_the_failure_reason(world: World) -> None:
    """The hook path (session_events -> LABS_SESSION_LISTENERS -> the class group), without a VM;
    tests/classes/test_live.py makes the verdict with a real check."""
    session = world.watched.session
    assert session is not None

    def verdict() -> None:
        StepResult.objects.create(session=session, step=1, passed=False, message="no file",
                                  details=[{"ok": False, "en": "no file", "zh": "没有文件", "detail": ""}])  # fmt: skip
        push_session(session.id)

    async def scenario() -> None:
        grid = Socket(f"/ws/classes/{world.klass.pk}/live/", world.headers("co-instructor"))
        assert (await grid.connect())[0]
        assert (await grid.text())["type"] == "grid"
        elsewhere = Socket(f"/ws/classes/{world.other.klass.pk}/live/", world.headers("other instructor"))
        assert (await elsewhere.connect())[0]
        assert (await elsewhere.text())["type"] == "grid"
        await sync_to_async(verdict)()
        update = await grid.text()
        assert update["type"] == "seat"
        assert update["row"]["user"] == "max"
        cell = update["row"]["cells"][0]
        assert (cell["state"], cell["attempts"], cell["reason"]) == ("failed", 1, {"en": "no file", "zh": "没有文件"})
        assert await elsewhere.silent(0.5), "another class's grid heard of this seat"

    run(scenario)


# --- Watching a learner's terminal -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["terminal", "events"])
@pytest.mark.parametrize("who", WHO)
def test_a_classmates_session_is_watched_by_the_class_teachers_only(world: World, who: str, kind: str) -> None:
    assert world.watched.session is not None
    path = f"/ws/sessions/{world.watched.session.id}/{kind}/"
    outcome: list[object] = []

    async def scenario() -> None:
        socket = Socket(path, world.headers(who))
        accepted, code = await socket.connect()
        outcome.append(ACCEPTED if accepted else code)
        if accepted and kind == "terminal":
            outcome.append(await socket.text())

    run(scenario)
    if who in TEACHERS:
        assert outcome[0] == ACCEPTED
        if kind == "terminal":
            assert outcome[1] == {"type": "hello", "observer": True}
    else:
        assert outcome == [4403]


def test_a_class_teacher_observes_but_never_types_resizes_or_acts(world: World) -> None:
    session = world.watched.session
    assert session is not None

    async def scenario() -> None:
        terminal = Socket(f"/ws/sessions/{session.id}/terminal/", world.headers("instructor"))
        assert (await terminal.connect())[0]
        assert (await terminal.text())["observer"] is True
        await terminal.send_bytes(b"rm -rf /\r")
        notice = await terminal.text()
        assert (notice["type"], notice["code"]) == ("notice", "read_only")
        await terminal.send_json({"type": "resize", "cols": 100, "rows": 30})
        await terminal.send_json({"type": "input", "data": "reboot\r"})
        assert await terminal.silent(0.3)

    run(scenario)
    client = redis_client()
    assert client.llen(input_key(session.id)) == 0
    assert client.llen(size_key(session.id)) == 0
    teacher = Client()
    teacher.force_login(world.klass.owner)
    assert teacher.get(f"/api/sessions/{session.id}").status_code == 200
    for action, body in [("check", {"step": 1}), ("goto", {"step": 1}), ("reset", None), ("extend", None),
                         ("stop", None)]:  # fmt: skip
        response = teacher.post(f"/api/sessions/{session.id}/{action}", body, content_type="application/json")
        assert response.status_code == 403, action
    # Another class's session stays out of sight: the same 404 as for a session nobody holds.
    assert world.other.session is not None
    assert teacher.get(f"/api/sessions/{world.other.session.id}").status_code == 404


def test_the_learner_is_told_while_their_instructor_watches(world: World) -> None:
    session = world.watched.session
    assert session is not None
    learner = world.headers("watched learner")

    async def scenario() -> None:
        events = Socket(f"/ws/sessions/{session.id}/events/", learner)
        assert (await events.connect())[0]
        assert (await events.text())["type"] == "session"
        terminal = Socket(f"/ws/sessions/{session.id}/terminal/", world.headers("co-instructor"))
        assert (await terminal.connect())[0]
        assert await events.text() == {"type": "watchers", "count": 1}
        # A page opened while someone watches is told at once.
        late = Socket(f"/ws/sessions/{session.id}/events/", learner)
        assert (await late.connect())[0]
        assert (await late.text())["type"] == "session"
        assert await late.text() == {"type": "watchers", "count": 1}
        await terminal.leave()
        assert await events.text() == {"type": "watchers", "count": 0}
        # The learner's own terminal is not an observer: nobody is told anything.
        own = Socket(f"/ws/sessions/{session.id}/terminal/", learner)
        assert (await own.connect())[0]
        assert (await own.text())["observer"] is False
        assert await events.silent(0.3)

    run(scenario)


# --- Messages --------------------------------------------------------------------------------------


def test_a_message_reaches_its_learner_only_and_a_reload_shows_it(world: World, settings: Settings) -> None:
    settings.CLASSES_MESSAGE_MAX_CHARS = 50
    watched, own, other = world.watched.session, world.own.session, world.other.session
    assert watched is not None
    assert own is not None
    assert other is not None

    async def scenario() -> None:
        pages = {}
        for name, session, who in [("watched", watched, "watched learner"), ("own", own, "learner of the class"),
                                   ("other", other, "learner of another class")]:  # fmt: skip
            pages[name] = Socket(f"/ws/sessions/{session.id}/events/", world.headers(who))
            assert (await pages[name].connect())[0]
            assert (await pages[name].text())["type"] == "session"
        grid = Socket(f"/ws/classes/{world.klass.pk}/live/", world.headers("instructor"))
        assert (await grid.connect())[0]
        await grid.text()
        text = "<b>Hint:</b> bind edu to vfio-pci"
        await grid.send_json({"type": "message", "text": text, "seat": world.watched.pk})
        assert (await grid.text())["type"] == "sent"
        shown = await pages["watched"].text()
        assert shown["type"] == "message"
        assert (shown["message"]["text"], shown["message"]["sender"], shown["message"]["to_class"]) == (
            text, "teacher", False)  # fmt: skip
        assert await pages["own"].silent(0.3)
        # To the whole class: both learners of the class, nobody else.
        await grid.send_json({"type": "message", "text": "Five minutes left", "seat": None})
        assert (await grid.text())["type"] == "sent"
        for name in ("watched", "own"):
            assert (await pages[name].text())["message"]["to_class"] is True
        assert await pages["other"].silent(0.3)
        # Refused: too long, empty, a seat of another class (a seat id is no way in), not JSON-typed.
        bads: list[dict[str, object]] = [{"text": "x" * 51, "seat": None}, {"text": "   ", "seat": None},
                    {"text": "hi", "seat": world.other.pk}, {"text": "hi", "seat": "1"}]  # fmt: skip
        for bad in bads:
            await grid.send_json({"type": "message", **bad})
            answer = await grid.text()
            assert answer["type"] == "error", (bad, answer)
            await asyncio.sleep(1.05)  # one answer per code per second
        assert await pages["other"].silent(0.2)
        # A reload replays the recent messages: its own and the class's, never a classmate's.
        reload = Socket(f"/ws/sessions/{own.id}/events/", world.headers("learner of the class"))
        assert (await reload.connect())[0]
        assert (await reload.text())["type"] == "session"
        replay = await reload.text()
        assert (replay["type"], replay["message"]["text"]) == ("message", "Five minutes left")
        assert await reload.silent(0.3)

    run(scenario)
    assert ClassMessage.objects.filter(klass=world.klass).count() == 2
    logged = ClassAction.objects.filter(klass=world.klass, action="message")
    assert logged.count() == 2
    assert all(a.actor == world.users["instructor"] for a in logged)


def test_messages_are_rate_limited_per_sender(world: World, settings: Settings) -> None:
    settings.CLASSES_MESSAGE_RATE = 2

    async def scenario() -> None:
        grid = Socket(f"/ws/classes/{world.klass.pk}/live/", world.headers("co-instructor"))
        assert (await grid.connect())[0]
        await grid.text()
        for n in range(2):
            await grid.send_json({"type": "message", "text": f"hint {n}", "seat": None})
            assert (await grid.text())["type"] == "sent"
        await grid.send_json({"type": "message", "text": "one too many", "seat": None})
        refused = await grid.text()
        assert (refused["type"], refused["code"]) == ("error", "message_refused")
        assert "at most 2" in refused["message"]

    run(scenario)
    assert ClassMessage.objects.filter(klass=world.klass).count() == 2


def test_a_co_instructor_removed_while_watching_the_grid_loses_it(world: World) -> None:
    def remove() -> None:
        world.klass.co_instructors.clear()  # the class had one: the co-instructor

    async def scenario() -> None:
        grid = Socket(f"/ws/classes/{world.klass.pk}/live/", world.headers("co-instructor"))
        assert (await grid.connect())[0]
        assert (await grid.text())["type"] == "grid"
        await sync_to_async(remove)()
        await grid.send_json({"type": "message", "text": "still here?", "seat": None})
        assert await grid.close_code() == 4403

    run(scenario)
    assert not ClassMessage.objects.filter(klass=world.klass).exists()
