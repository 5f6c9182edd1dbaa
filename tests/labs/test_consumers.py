"""Websockets: only the owner drives a session, staff observe, everyone else is refused before joining."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync, sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from pytest_django import Settings

from labs.host.console_relay import append_output
from labs.limited_consumer import close_shared_redis
from labs.models import LabSession
from labs.redis_names import input_key, size_key, terminal_group
from labs.services.transitions import transition
from labs.states import SessionState
from portal.asgi import application
from tests import lab_stack

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = b"http://testserver"


class Socket:
    """The ASGI application driven as a websocket, in-process (channels.testing needs daphne)."""

    def __init__(self, path: str, headers: list[tuple[bytes, bytes]], **scope: Any) -> None:
        self.app = ApplicationCommunicator(application, {"type": "websocket", "path": path, "query_string": b"",
                                                         "headers": headers, "subprotocols": [], **scope})  # fmt: skip
        OPEN.append(self)

    async def connect(self) -> tuple[bool, int]:
        await self.app.send_input({"type": "websocket.connect"})
        response = await self.app.receive_output(5)
        return response["type"] == "websocket.accept", int(response.get("code", 0) or 0)

    async def text(self) -> dict[str, Any]:
        response = await self.app.receive_output(5)
        assert response["type"] == "websocket.send", response
        return json.loads(response["text"])

    async def binary(self) -> bytes:
        response = await self.app.receive_output(5)
        assert response["type"] == "websocket.send", response
        return bytes(response["bytes"])

    async def close_code(self) -> int:
        response = await self.app.receive_output(5)
        assert response["type"] == "websocket.close", response
        return int(response.get("code", 0))

    async def send_bytes(self, data: bytes) -> None:
        await self.app.send_input({"type": "websocket.receive", "bytes": data})

    async def send_json(self, data: dict[str, Any]) -> None:
        await self.send_text(json.dumps(data))

    async def send_text(self, text: str) -> None:
        await self.app.send_input({"type": "websocket.receive", "text": text})

    async def output(self, timeout: float = 5) -> dict[str, Any]:
        """The next thing the app sent, whatever it is (a frame, or the close)."""
        return dict(await self.app.receive_output(timeout))

    async def silent(self, timeout: float = 0.3) -> bool:
        """Whether the app sends nothing within `timeout` (and keeps running)."""
        return bool(await self.app.receive_nothing(timeout))

    async def leave(self) -> None:
        """What a server does when the client goes (or after the app closed): disconnect, then wait."""
        if not self.app.future.done():
            await self.app.send_input({"type": "websocket.disconnect", "code": 1000})
        await self.app.wait(5)


OPEN: list[Socket] = []


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """One event loop for the whole conversation (the communicator is bound to it).

    Every socket is ended inside that loop, as a server would end it: an app left running would
    be cancelled by the loop's shutdown instead, outside the thread that serves its DB calls.
    """

    async def bounded() -> None:
        try:
            async with asyncio.timeout(60):
                await scenario()
        finally:
            while OPEN:
                await OPEN.pop().leave()
            await close_shared_redis()  # the consumers' pool belongs to this loop, which ends here

    async_to_sync(bounded)()


@pytest.fixture
def session(settings: Settings, tmp_path: Path, alice: User) -> Iterator[LabSession]:
    with lab_stack.private_redis() as url:
        lab_stack.point_settings_at_redis(settings, url)
        settings.CONTENT_DIR = tmp_path / "content"
        slug = lab_stack.write_test_lab(settings.CONTENT_DIR)
        yield LabSession.objects.create(user=alice, lab_slug=slug, state=SessionState.READY, host="h", vm_id="v")


def headers_for(user: User | None, origin: bytes = ORIGIN) -> list[tuple[bytes, bytes]]:
    headers = [(b"origin", origin), (b"host", b"testserver")]
    if user is not None:
        client = Client()
        client.force_login(user)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    return headers


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


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
