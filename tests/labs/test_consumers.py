"""Websockets: only the owner drives a session, staff observe, everyone else is refused before joining."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import User

from labs.host.console_relay import append_output
from labs.models import LabSession
from labs.redis_names import input_key, size_key, terminal_group
from labs.services.transitions import transition
from labs.states import SessionState
from tests.asgi_sockets import Socket, headers_for, redis_client, run, session

__all__ = ["session"]  # the fixture
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("kind", ["events", "terminal"])
def test_owner_connects(session: LabSession, alice: User, kind: str) -> None:
    headers = headers_for(alice)

    async def scenario() -> None:
        socket = Socket(f"/ws/sessions/{session.id}/{kind}/", headers)
        assert (await socket.connect())[0]
        assert (await socket.text())["type"] == ("session" if kind == "events" else "hello")
        await socket.leave()

    run(scenario)


@pytest.mark.parametrize("kind", ["events", "terminal"])
@pytest.mark.parametrize("who", ["bob", "anonymous"])
def test_others_are_refused_before_joining(session: LabSession, bob: User, kind: str, who: str) -> None:
    headers = headers_for(bob if who == "bob" else None)

    async def scenario() -> None:
        connected, code = await Socket(f"/ws/sessions/{session.id}/{kind}/", headers).connect()
        assert not connected
        assert code == 4403

    run(scenario)


@pytest.mark.parametrize("kind", ["events", "terminal"])
def test_wrong_origin_is_refused(session: LabSession, alice: User, kind: str) -> None:
    headers = headers_for(alice, origin=b"https://evil.example")

    async def scenario() -> None:
        connected, _ = await Socket(f"/ws/sessions/{session.id}/{kind}/", headers).connect()
        assert not connected

    run(scenario)


def test_terminal_sends_scrollback_then_live_bytes_and_forwards_keys(session: LabSession, alice: User) -> None:
    client = redis_client()
    append_output(client, session.id, "root@virtlab:~# 你好".encode())
    headers = headers_for(alice)

    async def scenario() -> None:
        socket = Socket(f"/ws/sessions/{session.id}/terminal/", headers)
        assert (await socket.connect())[0]
        assert (await socket.text())["type"] == "hello"
        assert await socket.binary() == "root@virtlab:~# 你好".encode()
        # A chunk the scrollback already delivered is not sent twice; a new one is.
        offset = append_output(client, session.id, b"ls\r\n")
        layer = get_channel_layer()
        assert layer is not None
        await layer.group_send(terminal_group(session.id), {"type": "term.output", "data": b"# ", "offset": 0})
        await layer.group_send(terminal_group(session.id), {"type": "term.output", "data": b"ls\r\n", "offset": offset})
        assert await socket.binary() == b"ls\r\n"
        await socket.send_bytes("中文\r".encode())
        await socket.send_json({"type": "resize", "cols": 120, "rows": 40})
        await socket.send_json({"type": "resize", "cols": 100, "rows": 30})
        for bad in ({"cols": "100", "rows": 30}, {"cols": 100000, "rows": 30}, {"cols": 100, "rows": True}):
            await socket.send_json({"type": "resize", **bad})
        await socket.send_json({"type": "input", "data": "粘贴"})
        await socket.leave()

    run(scenario)
    for typed in ("中文\r", "粘贴"):
        popped = client.blpop([input_key(session.id)], timeout=5)
        assert popped is not None, f"{typed!r} never reached the relay's input list"
        assert popped[1] == typed.encode()
    # Only the latest valid size waits for the relay; nonsense sizes are dropped.
    assert client.lrange(size_key(session.id), 0, -1) == [b"100 30"]


def test_staff_observe_but_cannot_type(session: LabSession) -> None:
    staff = User.objects.create_user("staffer", password="x", is_staff=True)
    headers = headers_for(staff)

    async def scenario() -> None:
        socket = Socket(f"/ws/sessions/{session.id}/terminal/", headers)
        assert (await socket.connect())[0]
        assert (await socket.text())["observer"] is True
        await socket.send_bytes(b"reboot\r")
        await socket.leave()

    run(scenario)
    assert redis_client().llen(input_key(session.id)) == 0


def test_terminal_of_an_ended_session_says_gone_and_closes(session: LabSession, alice: User) -> None:
    LabSession.objects.filter(pk=session.pk).update(state=SessionState.EXPIRED)
    headers = headers_for(alice)

    async def scenario() -> None:
        socket = Socket(f"/ws/sessions/{session.id}/terminal/", headers)
        assert (await socket.connect())[0]
        assert (await socket.text())["type"] == "gone"
        assert await socket.close_code() == 4410

    run(scenario)


def test_terminal_closes_when_the_vm_goes(session: LabSession, alice: User) -> None:
    headers = headers_for(alice)

    async def scenario() -> None:
        socket = Socket(f"/ws/sessions/{session.id}/terminal/", headers)
        assert (await socket.connect())[0]
        await socket.text()  # hello
        await sync_to_async(transition)(session.id, SessionState.FAILED, error="VM vanished")
        assert (await socket.text())["type"] == "gone"
        assert await socket.close_code() == 4410

    run(scenario)
