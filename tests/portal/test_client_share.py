"""Each client's share of a web process (portal/client_share.py): concurrency, queue and rate per
client and per address, the 429 and the websocket close they get past it, in their language.

The middleware wraps an app that holds each request until the test lets it go, so what runs at
once is observable; the last test runs the real site under uvicorn."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_django import Settings
from websockets.exceptions import ConnectionClosed

from portal import client_share
from portal.client_share import CLOSE_TOO_MANY, SCOPE_KEY, ClientShare, session_digest
from tests import lab_stack, servers

ADDRESS, OTHER_ADDRESS = "198.51.100.7", "203.0.113.9"
Message = dict[str, Any]


class Held:
    """An ASGI app that answers 200 only once released; counts what runs at once."""

    def __init__(self) -> None:
        self.running = self.peak = self.calls = 0
        self.release = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Callable[[Message], Awaitable[None]]) -> None:
        self.calls += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            if scope["type"] == "websocket":
                await receive()
                await send({"type": "websocket.accept"})
                return
            await self.release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        finally:
            self.running -= 1


def scope(path: str = "/api/sessions", session: str = "", address: str = ADDRESS, **headers: str) -> Message:
    raw = [(b"cookie", f"sessionid={session}".encode())] if session else []
    raw += [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return {"type": "http", "path": path, "method": "GET", "headers": raw, "client": (address, 40000)}


async def call(app: ClientShare, request: Message) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(request, receive, send)  # type: ignore[arg-type]
    return sent


def status(sent: list[Message]) -> int:
    return int(sent[0]["status"])


def header(sent: list[Message], name: bytes) -> str:
    return dict(sent[0]["headers"])[name].decode()


def body(sent: list[Message]) -> str:
    return bytes(sent[1]["body"]).decode()


@pytest.fixture
def limits(settings: Settings) -> Settings:
    settings.WEB_CLIENT_CONCURRENCY = 4
    settings.WEB_CLIENT_WAITING = 3
    settings.WEB_CLIENT_RATE = 1000
    settings.WEB_CLIENT_RATE_WINDOW_S = 10
    settings.WEB_ADDRESS_CONCURRENCY = 32
    settings.WEB_ADDRESS_RATE = 5000
    settings.WEB_REFUSAL_HOLD_MS = 0  # told at once; the hold has a test of its own
    return settings


def share(inner: Held, **users: int) -> ClientShare:
    """The middleware around `inner`, with these session cookies known as these users' (as
    LearnClients would have reported them)."""
    app = ClientShare(inner)  # type: ignore[arg-type]
    for session, user_id in users.items():
        app.known.learn(session_digest(session), user_id)
    return app


def test_a_users_requests_past_their_concurrency_wait_and_past_their_queue_are_refused(limits: Settings) -> None:
    inner = Held()
    app = share(inner, alice=1, bob=2)

    async def scenario() -> None:
        alices = [asyncio.create_task(call(app, scope(session="alice"))) for _ in range(10)]
        await asyncio.sleep(0.05)
        assert inner.running == 4  # her concurrency
        refused = [t.result() for t in alices if t.done()]
        assert [status(s) for s in refused] == [429] * 3  # 4 running, 3 waiting, the other 3 told at once
        bobs = asyncio.create_task(call(app, scope(session="bob")))
        await asyncio.sleep(0.05)
        assert inner.running == 5  # bob is not behind alice's queue
        inner.release.set()
        answered = [await t for t in alices] + [await bobs]
        assert sorted(status(s) for s in answered) == [200] * 8 + [429] * 3
        assert inner.peak == 5
        assert len(app.users) == 0  # nothing kept once idle
        assert len(app.addresses) == 0

    asyncio.run(scenario())


def test_past_their_rate_a_user_is_told_how_long_to_wait_in_their_language(limits: Settings) -> None:
    limits.WEB_CLIENT_RATE = 5
    inner = Held()
    inner.release.set()
    app = share(inner, alice=1, bob=2)

    async def scenario() -> None:
        for _ in range(5):
            assert status(await call(app, scope(session="alice"))) == 200
        api = await call(app, scope(session="alice"))
        assert status(api) == 429
        assert 1 <= int(header(api, b"retry-after")) <= 10
        assert header(api, b"content-type") == "application/json"
        assert json.loads(body(api))["detail"].startswith("Too many requests from this browser")
        page = await call(app, scope("/docs/", session="alice", accept_language="zh-CN,zh;q=0.9"))
        assert header(page, b"content-type") == "text/plain; charset=utf-8"
        assert "请求过多" in body(page)
        # Static files are not counted (a page's own assets); another user, or the address's
        # anonymous requests, are not affected.
        assert status(await call(app, scope("/static/labs/lab.js", session="alice"))) == 200
        assert status(await call(app, scope(session="bob"))) == 200
        assert status(await call(app, scope())) == 200
        assert inner.calls == 8

    asyncio.run(scenario())


def test_refusals_are_held_before_they_are_told_as_many_as_may_wait(limits: Settings) -> None:
    limits.WEB_CLIENT_RATE = 2
    limits.WEB_REFUSAL_HOLD_MS = 300
    inner = Held()
    inner.release.set()
    app = share(inner, alice=1, bob=2)

    async def timed(request: Message) -> tuple[int, float]:
        started = time.monotonic()
        return status(await call(app, request)), time.monotonic() - started

    async def scenario() -> None:
        assert [(await timed(scope(session="alice")))[0] for _ in range(2)] == [200, 200]
        # A script that asks again as soon as it is told: one refusal per hold, not a tight loop.
        code, took = await timed(scope(session="alice"))
        assert code == 429
        assert took >= 0.3
        # At once: as many are held as she may have waiting (3); the rest are told straight away.
        answers = await asyncio.gather(*(timed(scope(session="alice")) for _ in range(5)))
        assert all(code == 429 for code, _ in answers)
        assert sorted(took >= 0.3 for _, took in answers) == [False, False, True, True, True]
        assert app.held == {}  # nothing kept once told
        # Bob's requests are not held behind hers.
        code, took = await timed(scope(session="bob"))
        assert code == 200
        assert took < 0.2

    asyncio.run(scenario())


def test_cookies_django_has_not_vouched_for_count_as_their_address(limits: Settings) -> None:
    limits.WEB_ADDRESS_RATE = 8
    inner = Held()
    inner.release.set()
    app = share(inner, alice=1)

    async def scenario() -> list[int]:
        answers = [status(await call(app, scope(session=f"made-up-{n}"))) for n in range(12)]
        assert status(await call(app, scope())) == 429  # the same address without a cookie
        assert status(await call(app, scope(session="alice"))) == 200  # a user behind the same NAT
        assert status(await call(app, scope(address=OTHER_ADDRESS))) == 200
        return answers

    assert asyncio.run(scenario()) == [200] * 8 + [429] * 4


def test_a_cookie_becomes_its_users_once_a_response_has_vouched_for_it(limits: Settings) -> None:
    limits.WEB_ADDRESS_RATE = 2
    inner = Held()
    inner.release.set()
    app = share(inner)

    async def vouching(scope: Message, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and (b"cookie", b"sessionid=alice") in scope["headers"]:
            scope[SCOPE_KEY] = (session_digest("alice"), 1)  # what LearnClients does in Django's chain
        await inner(scope, receive, send)

    app.app = vouching  # type: ignore[assignment]

    async def scenario() -> list[int]:
        return [status(await call(app, scope(session="alice"))) for _ in range(10)]

    assert asyncio.run(scenario()) == [200] * 10  # the first counted against the address, then hers


def test_a_websocket_past_the_rate_is_closed_4429_with_the_reason(limits: Settings) -> None:
    limits.WEB_CLIENT_RATE = 2
    inner = Held()
    app = share(inner, alice=1)

    async def open_socket() -> list[Message]:
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "websocket.connect"}

        async def send(message: Message) -> None:
            sent.append(message)

        request = {**scope("/ws/sessions/x/terminal/", session="alice"), "type": "websocket"}
        await app(request, receive, send)  # type: ignore[arg-type]
        return sent

    async def scenario() -> None:
        assert [m["type"] for m in await open_socket()] == ["websocket.accept"]
        await open_socket()
        refused = await open_socket()
        assert [m["type"] for m in refused] == ["websocket.accept", "websocket.close"]
        assert refused[1]["code"] == CLOSE_TOO_MANY
        assert refused[1]["reason"].startswith("Too many requests")
        assert inner.calls == 2

    asyncio.run(scenario())


def test_refusals_are_logged_once_per_client_and_window(limits: Settings, caplog: pytest.LogCaptureFixture) -> None:
    limits.WEB_CLIENT_RATE = 1
    inner = Held()
    inner.release.set()
    app = share(inner, alice=7)

    async def scenario() -> None:
        for _ in range(20):
            await call(app, scope(session="alice"))

    with caplog.at_level(logging.WARNING, logger="portal.client_share"):
        asyncio.run(scenario())
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["user 7 refused, /api/sessions: over 1 requests in 10 s"]


def test_counting_requests_starts_no_thread(limits: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # The event loop counts every request: a thread started there (limits' MemoryStorage started
    # one for its expiry on a hit 10 ms after the last) stalls every socket of the process.
    inner = Held()
    inner.release.set()
    app = share(inner, alice=1)
    started: list[threading.Thread] = []
    monkeypatch.setattr(threading.Thread, "start", started.append)

    async def scenario() -> None:
        for who in ("alice", "", "alice", "") * 3:
            assert status(await call(app, scope(session=who))) == 200
            await asyncio.sleep(0.02)

    asyncio.run(scenario())
    assert started == []


def test_a_window_makes_room_as_hits_leave_it_and_forgets_idle_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    windows, rate = client_share.MovingWindows(), client_share.Rate(2, 10)
    assert windows.hit(rate, "user 1")
    assert windows.hit(rate, "user 1")
    assert not windows.hit(rate, "user 1")  # refused hits are not counted
    clock[0] += 4
    assert windows.hit(rate, "user 2")
    assert windows.seconds_to_room(rate, "user 1") == pytest.approx(6)
    clock[0] += 6
    assert windows.seconds_to_room(rate, "user 1") == 0
    assert windows.hit(rate, "user 1")
    assert len(windows) == 2
    clock[0] += 11  # both idle for a whole window: the next hit's sweep drops them
    assert windows.hit(rate, "user 3")
    assert len(windows) == 1


def test_a_rate_of_zero_turns_that_limit_off(limits: Settings) -> None:
    limits.WEB_CLIENT_RATE = 0
    limits.WEB_ADDRESS_RATE = 0
    inner = Held()
    inner.release.set()
    app = share(inner, alice=1)

    async def scenario() -> list[int]:
        return [status(await call(app, scope(session=who))) for who in ("alice", "") * 150]

    assert set(asyncio.run(scenario())) == {200}


def test_known_cookies_are_bounded_and_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_share, "KNOWN_MAX", 3)
    known = client_share.Known()
    for n in range(5):
        known.learn(f"d{n}", n)
    assert [known.user(f"d{n}") for n in range(5)] == [None, None, 2, 3, 4]
    monkeypatch.setattr(client_share, "KNOWN_S", -1.0)
    known.learn("d9", 9)
    assert known.user("d9") is None


@pytest.mark.slow
def test_on_the_real_site_a_flooding_learner_is_refused_while_another_is_served(tmp_path: Path) -> None:
    with lab_stack.lab_stack(tmp_path, agent=False, WEB_CLIENT_RATE="60") as stack:
        alice, bob = stack.client("alice"), stack.client("bob")
        answers: list[tuple[int, Any]] = []
        stop = threading.Event()

        def flood() -> None:
            while not stop.is_set():
                answers.append(alice.request("GET", "/api/labs"))

        threads = [threading.Thread(target=flood) for _ in range(8)]
        for thread in threads:
            thread.start()
        try:
            servers.wait_for(lambda: any(s == 429 for s, _ in answers), 30, "alice refused")
            bobs = []
            for _ in range(10):
                started = time.monotonic()
                bobs.append((bob.request("GET", "/api/labs")[0], time.monotonic() - started))
            # Signed in, alice is counted as herself: the address she shares with everyone here
            # (127.0.0.1) still serves someone who is not signed in.
            anonymous = lab_stack.LabClient(stack.base).request("GET", "/api/labs")[0]
            with pytest.raises(ConnectionClosed) as closed, alice.websocket("/ws/sessions/nosuch/events/") as events:
                events.recv(timeout=10)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
    refused = [b for s, b in answers if s == 429]
    assert refused[0]["detail"].startswith("Too many requests from this browser")
    first_refused = next(n for n, (s, _) in enumerate(answers) if s == 429)
    assert first_refused <= 60  # her allowance in the window (log-in included), not more
    assert [s for s, _ in bobs] == [200] * 10
    assert anonymous == 200
    assert max(t for _, t in bobs) < 2
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == CLOSE_TOO_MANY
