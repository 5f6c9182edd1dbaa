"""One learner's websockets cannot hurt another's: every limit is hit here, and its message asserted.

In-process (the ASGI app driven against a private Redis): input only while a VM takes it, frame
size, byte rate, the bounded keystroke list, sockets per user, malformed frames and the shared
Redis pool. A client that does not read: test_terminal_backpressure.py; Origin and logout:
test_socket_origin.py; against a real uvicorn, and in Chromium: test_terminal_limits_live.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time

import channels.consumer
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from pytest_django import Settings

from labs.models import LabSession
from labs.redis_names import input_key, sockets_key, terminal_group
from labs.services.transitions import transition
from labs.states import SessionState
from tests.asgi_sockets import (
    Socket,
    closed_with,
    headers_for,
    opened,
    queued,
    redis_client,
    run,
    session,
    terminal,
    told,
)

__all__ = ["session"]  # the fixture: alice's session, ready, against a private Redis
pytestmark = pytest.mark.django_db(transaction=True)
KiB = 1024


# --- Input only while a VM takes it --------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "taken"),
    [(SessionState.READY, True), (SessionState.PROVISIONING, True), (SessionState.REQUESTED, True),
     (SessionState.QUEUED, False), (SessionState.RESETTING, False)],
)  # fmt: skip
def test_input_is_taken_only_while_a_vm_takes_it(session: LabSession, alice: User, state: str, taken: bool) -> None:
    LabSession.objects.filter(pk=session.pk).update(state=state)
    headers = headers_for(alice)

    async def scenario() -> None:
        socket = await opened(terminal(session, headers=headers))
        await socket.send_bytes(b"ls\r")
        if taken:
            assert await socket.silent()
        else:
            notice = await told(socket, "not_ready")
            assert notice["type"] == "notice"
            assert "3 bytes dropped" in notice["message"]

    run(scenario)
    assert queued(session) == ([b"ls\r"] if taken else [])


def test_input_stops_when_the_session_starts_restoring_a_checkpoint(session: LabSession, alice: User) -> None:
    headers = headers_for(alice)

    async def scenario() -> None:
        socket = await opened(terminal(session, headers=headers))
        await socket.send_bytes(b"a")
        await sync_to_async(transition)(session.id, SessionState.RESETTING)
        # The state reaches the socket over the channel layer: type until it is told.
        for _ in range(50):
            await socket.send_bytes(b"b")
            if not await socket.silent(0.1):
                break
        assert "Restoring a checkpoint" in (await told(socket, "not_ready"))["message"]

    run(scenario)
    assert queued(session)[0] == b"a"
    assert set(queued(session)) <= {b"a", b"b"}


def test_an_observer_is_told_that_typing_is_not_sent(session: LabSession) -> None:
    staff = User.objects.create_user("staffer", password="x", is_staff=True)
    headers = headers_for(staff)

    async def scenario() -> None:
        socket = await opened(terminal(session, headers=headers))
        await socket.send_bytes(b"reboot\r")
        assert (await told(socket, "read_only"))["type"] == "notice"

    run(scenario)
    assert queued(session) == []


# --- Frame size and byte rate --------------------------------------------------------------------


@pytest.mark.parametrize("as_text", [False, True])
def test_a_frame_over_the_size_limit_is_dropped_with_an_error(session: LabSession, alice: User,
                                                                as_text: bool) -> None:  # fmt: skip
    headers = headers_for(alice)
    limit = 64 * KiB

    async def scenario() -> None:
        socket = await opened(terminal(session, headers=headers))
        if as_text:  # 64 KiB + 1 of JSON: a frame's size is what crossed the wire, not what it decodes to
            data = "x" * (limit + 1 - len(json.dumps({"type": "input", "data": ""})))
            await socket.send_json({"type": "input", "data": data})
        else:
            await socket.send_bytes(b"x" * (limit + 1))
        error = await told(socket, "frame_size")
        assert error["type"] == "error"
        assert error["limit"] == limit
        assert f"{limit + 1} bytes was dropped" in error["message"]
        await socket.send_bytes(b"y" * limit)  # exactly the limit passes
        assert await socket.silent()

    run(scenario)
    assert queued(session) == [b"y" * limit]


def test_input_past_the_byte_rate_is_dropped_with_a_notice(session: LabSession, alice: User,
                                                            settings: Settings) -> None:  # fmt: skip
    settings.LABS_WS_INPUT_RATE_BPS, settings.LABS_WS_INPUT_BURST_BYTES = 1000, 2000
    headers = headers_for(alice)

    async def scenario() -> None:
        socket = await opened(terminal(session, headers=headers))
        await socket.send_bytes(b"p" * 2000)  # a paste: the whole burst
        await socket.send_bytes(b"q" * 100)  # nothing left
        notice = await told(socket, "input_rate")
        assert notice["type"] == "notice"
        assert notice["limit"] == 1000
        assert "100 bytes dropped" in notice["message"]
        await asyncio.sleep(0.3)  # refills 300 bytes
        await socket.send_bytes(b"r" * 100)
        assert await socket.silent()

    run(scenario)
    assert queued(session) == [b"p" * 2000, b"r" * 100]


# --- The keystroke list in Redis ------------------------------------------------------------------


def test_the_keystroke_list_is_bounded_and_the_excess_dropped_with_a_notice(session: LabSession,
                                                                            alice: User) -> None:  # fmt: skip
    headers = headers_for(alice)

    async def scenario() -> None:
        socket = await opened(terminal(session, headers=headers))
        for _ in range(200):  # 200 keystrokes while nothing pops them (the relay holds, or is away)
            await socket.send_bytes(b"k")
        notice = await told(socket, "input_queue")
        assert notice["limit"] == 128
        assert "1 bytes dropped" in notice["message"]

    run(scenario)
    assert len(queued(session)) == 128


def test_a_flood_of_big_frames_leaves_redis_bounded(session: LabSession, alice: User, settings: Settings) -> None:
    # The attack (64 KiB frames as fast as possible), with the byte rate out of the way so
    # that only the list's bound stands: at most 128 frames x 64 KiB, whatever is sent.
    settings.LABS_WS_INPUT_RATE_BPS = settings.LABS_WS_INPUT_BURST_BYTES = 10**9
    client = redis_client()
    before = int(client.info("memory")["used_memory"])
    headers = headers_for(alice)
    frame = os.urandom(64 * KiB)

    async def scenario() -> None:
        socket = await opened(terminal(session, headers=headers))
        for _ in range(400):  # 25 MiB
            await socket.send_bytes(frame)
        await socket.send_text("[]")  # answered once everything before it was handled
        while (await socket.output()).get("text", "").find("bad_frame") < 0:
            pass

    run(scenario)
    assert client.llen(input_key(session.id)) == 128
    growth = int(client.info("memory")["used_memory"]) - before
    # 128 x 64 KiB = 8 MiB of data; the allocator rounds each entry up (~10 MiB measured).
    assert growth < 128 * 64 * KiB * 1.5, f"Redis grew {growth / 2**20:.1f} MiB"


# --- Sockets per user -----------------------------------------------------------------------------


def test_sockets_per_user_are_capped_with_a_message_and_4429(session: LabSession, alice: User,
                                                             settings: Settings) -> None:  # fmt: skip
    settings.LABS_WS_PER_USER = 2
    headers = headers_for(alice)
    client = redis_client()

    async def scenario() -> None:
        first = await opened(terminal(session, headers=headers))
        await opened(terminal(session, headers=headers))
        third = terminal(session, headers=headers)
        assert (await third.connect())[0], "accepted, so that the page can be told why it closes"
        error = await told(third, "too_many_sockets")
        assert error["type"] == "error"
        assert error["limit"] == 2
        assert "(2 open, 2 at most)" in error["message"]
        assert await closed_with(third) == 4429
        await third.leave()
        assert client.zcard(sockets_key(alice.pk, "terminal")) == 2
        # Events sockets are counted apart: the page's own still opens.
        await opened(Socket(f"/ws/sessions/{session.id}/events/", headers))
        # A closed socket frees its place at once.
        await first.leave()
        assert client.zcard(sockets_key(alice.pk, "terminal")) == 1
        await opened(terminal(session, headers=headers))

    run(scenario)


def test_a_claim_left_by_a_dead_web_process_lapses(session: LabSession, alice: User, settings: Settings) -> None:
    settings.LABS_WS_PER_USER = 1
    redis_client().zadd(sockets_key(alice.pk, "terminal"), {"specific.gone": time.time() - 1})
    headers = headers_for(alice)

    async def scenario() -> None:
        await opened(terminal(session, headers=headers))

    run(scenario)


# --- Malformed frames -----------------------------------------------------------------------------

BAD_TERMINAL_FRAMES = [
    "not json",
    "",
    "[]",
    "1",
    "null",
    '"input"',
    "[" * 50_000,  # past the JSON parser's nesting depth
    "{}",
    '{"type": 5}',
    '{"type": "reboot"}',
    '{"type": "input"}',
    '{"type": "input", "data": 5}',
    '{"type": "input", "data": "\\ud800"}',  # a lone surrogate: no UTF-8 for it
    '{"type": "input_b64", "data": "!!!!"}',
    '{"type": "input_b64", "data": "YQ"}',  # bad padding
    '{"type": "input_b64", "data": ["YQ=="]}',
    '{"type": "resize", "cols": 80}',
    '{"type": "resize", "cols": "80", "rows": 24}',
    '{"type": "resize", "cols": 80.5, "rows": 24}',
    '{"type": "resize", "cols": true, "rows": 24}',
    '{"type": "resize", "cols": -1, "rows": 24}',
    '{"type": "resize", "cols": 1e999, "rows": 24}',
    '{"type": "resize", "cols": 100000000000000000000000, "rows": 24}',
]


@pytest.mark.parametrize("frame", BAD_TERMINAL_FRAMES, ids=lambda f: f[:30])
def test_a_malformed_terminal_frame_gets_an_error_and_the_socket_works_on(session: LabSession, alice: User,
                                                                          frame: str) -> None:  # fmt: skip
    headers = headers_for(alice)

    async def scenario() -> None:
        socket = await opened(terminal(session, headers=headers))
        await socket.send_text(frame)
        assert (await told(socket, "bad_frame"))["type"] == "error"
        await socket.send_json({"type": "input_b64", "data": base64.b64encode(b"ok\r").decode()})
        assert await socket.silent()

    run(scenario)
    assert queued(session) == [b"ok\r"]


@pytest.mark.parametrize("frame", [b"\x00\x01", "[]", '{"type": "input", "data": "ls"}', "nope"], ids=repr)
def test_the_events_socket_answers_any_frame_with_an_error(session: LabSession, alice: User,
                                                          frame: bytes | str) -> None:  # fmt: skip
    headers = headers_for(alice)

    async def scenario() -> None:
        socket = await opened(Socket(f"/ws/sessions/{session.id}/events/", headers))
        if isinstance(frame, bytes):
            await socket.send_bytes(frame)
        else:
            await socket.send_text(frame)
        assert (await told(socket, "bad_frame"))["type"] == "error"

    run(scenario)


# --- One Redis pool per process -------------------------------------------------------------------


def test_sockets_share_one_redis_pool(session: LabSession, alice: User, settings: Settings) -> None:
    settings.LABS_WS_PER_USER = 20
    headers = headers_for(alice)
    client = redis_client()
    counts: list[int] = []

    async def scenario() -> None:
        sockets = [await opened(terminal(session, headers=headers))]
        await sockets[0].send_bytes(b"1")
        assert await sockets[0].silent()
        counts.append(len(client.client_list()))
        for n in range(12):
            sockets.append(await opened(terminal(session, headers=headers)))
            await sockets[-1].send_bytes(str(n).encode())
            assert await sockets[-1].silent(0.05)
        counts.append(len(client.client_list()))

    run(scenario)
    assert counts[1] - counts[0] <= 2, f"Redis connections went from {counts[0]} to {counts[1]} for 12 more sockets"


def test_keystrokes_and_output_take_no_thread_hop(
    session: LabSession, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    # channels would run close_old_connections in the process's one sync thread before every
    # message: each keystroke and console chunk queued behind every socket's database work.
    hops: list[str] = []

    async def counted() -> None:
        hops.append("close_old_connections")

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)
    headers = headers_for(alice)

    async def scenario() -> None:
        socket = await opened(terminal(session, headers=headers))
        hops.clear()  # opening reads the database (through database_sync_to_async)
        layer = get_channel_layer()
        assert layer is not None
        for n in range(5):
            await socket.send_bytes(b"k")
            chunk = {"type": "term.output", "data": b"k", "offset": 1000 + n}
            await layer.group_send(terminal_group(session.id), chunk)
            assert await socket.binary() == b"k"
        await socket.leave()

    run(scenario)
    assert hops == []
    assert queued(session) == [b"k"] * 5
