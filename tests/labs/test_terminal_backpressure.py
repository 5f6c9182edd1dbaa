"""Console output to a client that does not read is never held for it: the client is told to resync
and closed, and what waits for a slow one is coalesced (in-process, against a private Redis)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import User

from labs.models import LabSession
from labs.redis_names import terminal_group
from labs.services.transitions import transition
from labs.states import SessionState
from portal.asgi import application
from tests.asgi_sockets import (
    headers_for,
    run,
    session,
)

__all__ = ["session"]  # the fixture: alice's session, ready, against a private Redis
pytestmark = pytest.mark.django_db(transaction=True)
KiB = 1024


# --- Output to a client that does not read --------------------------------------------------------


class StalledClient:
    """The app as a websocket whose client reads nothing until `read()`: every send after the
    accept waits, as uvicorn's does while the connection's write buffer is full."""

    def __init__(self, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        scope = {"type": "websocket", "path": path, "query_string": b"", "headers": headers, "subprotocols": []}
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.reading = asyncio.Event()
        self.accepted = asyncio.Event()
        self.incoming.put_nowait({"type": "websocket.connect"})
        self.task = asyncio.ensure_future(application(cast(Any, scope), cast(Any, self.incoming.get), self._send))

    async def _send(self, message: Any) -> None:
        if message["type"] == "websocket.accept":
            self.accepted.set()
            return
        await self.reading.wait()
        self.sent.append(dict(message))

    async def read(self) -> list[dict[str, Any]]:
        """Start reading; everything sent up to the close."""
        self.reading.set()
        async with asyncio.timeout(5):
            while not self.sent or self.sent[-1]["type"] != "websocket.close":
                await asyncio.sleep(0.01)
        await self.incoming.put({"type": "websocket.disconnect", "code": 1000})
        await self.task
        return self.sent


async def publish(session: LabSession, chunks: list[bytes]) -> None:
    layer = get_channel_layer()
    assert layer is not None
    offset = 0
    for chunk in chunks:
        await layer.group_send(terminal_group(session.id), {"type": "term.output", "data": chunk, "offset": offset})
        offset += len(chunk)


def resynced_after(session: LabSession, alice: User, act: Callable[[], Awaitable[None]]) -> list[dict[str, Any]]:
    """What a terminal client that reads nothing is sent while `act` runs: a resync, then close 4408."""
    headers = headers_for(alice)
    sent: list[dict[str, Any]] = []

    async def scenario() -> None:
        client = StalledClient(f"/ws/sessions/{session.id}/terminal/", headers)
        await client.accepted.wait()
        await asyncio.sleep(0.2)  # joined its groups
        await act()
        sent.extend(await client.read())

    run(scenario)
    texts = [json.loads(m["text"]) for m in sent if m.get("text")]
    assert texts == [{"type": "hello", "observer": False}, {"type": "resync"}]
    assert sum(len(m.get("bytes") or b"") for m in sent) == 0, "no console bytes: they were dropped, not held"
    assert (sent[-1]["type"], sent[-1]["code"]) == ("websocket.close", 4408)
    return sent


def test_a_client_that_falls_behind_is_told_to_resync_and_closed(session: LabSession, alice: User) -> None:
    async def flood() -> None:
        # 3 MiB of console output (think `yes`) while the client reads nothing: held, it would all
        # sit in the web process; past 256 KiB the socket gives up on it.
        await publish(session, [b"y\n" * 32 * KiB] * 48)
        await asyncio.sleep(0.5)

    sent = resynced_after(session, alice, flood)
    assert "reconnect" in sent[-1]["reason"]


def test_a_consumer_whose_channel_overflowed_tells_its_client_to_resync(session: LabSession, alice: User) -> None:
    """Its own loop fell behind (portal/channel_layer.py dropped what waited): same as a slow client."""

    async def overflow() -> None:
        layer = get_channel_layer()
        assert layer is not None
        await layer.group_send(terminal_group(session.id), {"type": "channel.overflow"})
        await asyncio.sleep(0.2)
        await publish(session, [b"after\n"])  # it left the group: nothing more is queued for it
        await asyncio.sleep(0.2)

    resynced_after(session, alice, overflow)


@pytest.mark.alone
def test_output_waiting_for_a_slow_client_is_coalesced(session: LabSession, alice: User) -> None:
    headers = headers_for(alice)
    sent: list[dict[str, Any]] = []

    async def scenario() -> None:
        client = StalledClient(f"/ws/sessions/{session.id}/terminal/", headers)
        await client.accepted.wait()
        await asyncio.sleep(0.2)
        await publish(session, [f"line {n}\r\n".encode() for n in range(100)])
        await asyncio.sleep(0.3)
        await client.incoming.put({"type": "websocket.receive", "text": '{"type": "reboot"}'})  # an error, then
        await sync_to_async(transition)(session.id, SessionState.FAILED, error="gone")  # a close to end on
        await asyncio.sleep(0.3)
        sent.extend(await client.read())

    run(scenario)
    frames = [m["bytes"] for m in sent if m.get("bytes")]
    assert b"".join(frames) == b"".join(f"line {n}\r\n".encode() for n in range(100)), "every byte, in order"
    # One frame on a quiet machine; a loaded one may deliver the publish to the relay in a few
    # batches. Without coalescing it is 100 frames.
    assert len(frames) <= 4, f"{len(frames)} frames for 100 chunks waiting for a slow client"
