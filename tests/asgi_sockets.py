"""The ASGI application driven as a websocket in-process, and the fixture and helpers its tests share
(test_consumers, test_terminal_limits, test_access, the class grid's and the fuzzer's tests)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from pytest_django import Settings

from labs.limited_consumer import close_shared_redis
from labs.models import LabSession
from labs.redis_names import input_key
from labs.states import SessionState
from portal.asgi import application
from tests import lab_stack, servers

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
    with servers.private_redis() as url:
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


def terminal(session: LabSession, user: User | None = None, headers: list[tuple[bytes, bytes]] | None = None) -> Socket:
    return Socket(f"/ws/sessions/{session.id}/terminal/", headers if headers is not None else headers_for(user))


async def opened(socket: Socket) -> Socket:
    """Connected, past the hello (terminal) or the first state (events)."""
    accepted, code = await socket.connect()
    assert accepted, code
    assert (await socket.text())["type"] in {"hello", "session"}
    return socket


async def told(socket: Socket, code: str) -> dict[str, Any]:
    """The next notice or error the socket sends (console bytes skipped); it must carry `code`."""
    while True:
        out = await socket.output()
        assert out["type"] == "websocket.send", out
        if out.get("text") is not None:
            message = json.loads(out["text"])
            assert message.get("code") == code, message
            assert message["type"] in {"notice", "error"}
            assert message["message"]
            return message


async def closed_with(socket: Socket) -> int:
    while True:
        out = await socket.output()
        if out["type"] == "websocket.close":
            return int(out["code"])


def queued(session: LabSession) -> list[bytes]:
    return cast(list[bytes], redis_client().lrange(input_key(session.id), 0, -1))
