"""One learner's websockets cannot hurt another's: every limit is hit here, and its message asserted.

In-process (the ASGI app driven against a private Redis): input only while a VM takes it, frame
size, byte rate, the bounded keystroke list, sockets per user, malformed frames, the shared Redis
pool, a client that does not read (resync), Origin, and logout. Against a real uvicorn, and in
Chromium: test_terminal_limits_live.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import channels.consumer
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from django.test import Client
from pytest_django import Settings

from labs.models import LabSession
from labs.redis_names import input_key, sockets_key, terminal_group
from labs.services.transitions import transition
from labs.states import SessionState
from portal.asgi import application
from tests.labs import test_consumers
from tests.labs.test_consumers import Socket, headers_for, redis_client, run

session = test_consumers.session  # the fixture: alice's session, ready, against a private Redis

pytestmark = pytest.mark.django_db(transaction=True)
KiB = 1024


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


# --- Origin ---------------------------------------------------------------------------------------

Case = tuple[str, str, str | None, str | None]
SAME_ORIGIN: list[Case] = [
    # (scheme the server saw, Host, Origin, X-Forwarded-Proto)
    ("ws", "testserver", "http://testserver", None),
    ("ws", "127.0.0.1:8000", "http://127.0.0.1:8000", None),
    ("ws", "localhost:80", "http://localhost", None),
    ("wss", "testserver", "https://testserver", None),
    ("ws", "testserver", "https://testserver", "https"),  # TLS ends at the proxy in front
    ("ws", "[::1]:8000", "http://[::1]:8000", None),
]
OTHER_ORIGIN: list[Case] = [
    ("ws", "127.0.0.1:8000", "http://127.0.0.1:9999", None),  # the case: same host, other port
    ("ws", "testserver", "http://testserver:8080", None),
    ("ws", "testserver", "https://testserver", None),  # other scheme
    ("wss", "testserver", "http://testserver", None),
    ("ws", "testserver", "http://testserver", "https"),
    ("ws", "testserver", "https://evil.example", None),
    ("ws", "evil.example", "http://evil.example", None),  # a host this site does not serve
    ("ws", "testserver", "null", None),
    ("ws", "testserver", "file://testserver", None),
    ("ws", "testserver", "http://testserver:notaport", None),
    ("ws", "testserver", None, None),  # no Origin at all
]


def origin_headers(user: User, host: str, origin: str | None, proto: str | None) -> list[tuple[bytes, bytes]]:
    headers = [(name, value) for name, value in headers_for(user) if name not in (b"origin", b"host")]
    headers.append((b"host", host.encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if proto is not None:
        headers.append((b"x-forwarded-proto", proto.encode()))
    return headers


@pytest.mark.parametrize(("scheme", "host", "origin", "proto"), SAME_ORIGIN + OTHER_ORIGIN)
@pytest.mark.parametrize("kind", ["events", "terminal"])
def test_origin_must_match_scheme_host_and_port(session: LabSession, alice: User, kind: str, scheme: str, host: str,
                                                origin: str | None, proto: str | None) -> None:  # fmt: skip
    headers = origin_headers(alice, host, origin, proto)
    allowed = (scheme, host, origin, proto) in SAME_ORIGIN

    async def scenario() -> None:
        socket = Socket(f"/ws/sessions/{session.id}/{kind}/", headers, scheme=scheme)
        assert await socket.connect() == ((True, 0) if allowed else (False, 4403))

    run(scenario)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [("https://virtlab.example.org", True), ("https://virtlab.example.org:443", True),
     ("http://virtlab.example.org", False), ("https://virtlab.example.org:8443", False),
     ("https://lab.class.example.com", True), ("https://class.example.com", True),
     ("https://evilclass.example.com", False), ("http://lab.class.example.com", False)],
)  # fmt: skip
def test_trusted_origins_are_compared_whole(session: LabSession, alice: User, settings: Settings, origin: str,
                                            allowed: bool) -> None:  # fmt: skip
    settings.CSRF_TRUSTED_ORIGINS = ["https://virtlab.example.org", "https://*.class.example.com"]
    headers = origin_headers(alice, "internal:8000", origin, None)  # the proxy's Host is not the origin's

    async def scenario() -> None:
        socket = Socket(f"/ws/sessions/{session.id}/events/", headers)
        assert (await socket.connect())[0] is allowed

    run(scenario)


# --- Logout ---------------------------------------------------------------------------------------


def test_logging_out_closes_the_users_sockets_and_only_theirs(session: LabSession, alice: User, bob: User) -> None:
    browser = Client()
    browser.force_login(alice)
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver"),
               (b"cookie", f"sessionid={browser.cookies['sessionid'].value}".encode())]  # fmt: skip
    bobs = LabSession.objects.create(user=bob, lab_slug=session.lab_slug, state=SessionState.READY, host="h", vm_id="w")
    bob_headers = headers_for(bob)

    async def scenario() -> None:
        term = await opened(terminal(session, headers=headers))
        events = await opened(Socket(f"/ws/sessions/{session.id}/events/", headers))
        other = await opened(terminal(bobs, headers=bob_headers))
        await sync_to_async(browser.logout)()
        for closing in (term, events):
            error = await told(closing, "signed_out")
            assert error["type"] == "error"
            assert await closed_with(closing) == 4401
        await term.send_bytes(b"after\r")
        assert await other.silent()

    run(scenario)
    assert queued(session) == []
