"""After Redis restarts, a web process's pooled connections are stale: the first websocket to use
one (channels_redis's group join) is closed with 1011 and told to retry, and nothing escapes the
consumer as an uncaught ASGI error; the next socket works."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from pytest_django import Settings
from redis.exceptions import RedisError

from labs.limited_consumer import CLOSE_UNAVAILABLE, shared_redis
from labs.models import LabSession
from labs.states import SessionState
from tests import lab_stack, servers
from tests.asgi_sockets import Socket, headers_for, run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[servers.RedisServer]:
    server = servers.RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def session(settings: Settings, tmp_path: Path, alice: User, redis_server: servers.RedisServer) -> LabSession:
    lab_stack.point_settings_at_redis(settings, redis_server.url)
    settings.CONTENT_DIR = tmp_path / "content"
    slug = lab_stack.write_test_lab(settings.CONTENT_DIR)
    return LabSession.objects.create(user=alice, lab_slug=slug, state=SessionState.READY, host="h", vm_id="v")


@pytest.mark.parametrize("kind", ["terminal", "events"])
def test_a_socket_after_a_redis_restart_is_told_to_retry_and_the_next_one_works(
    session: LabSession, alice: User, redis_server: servers.RedisServer, kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    headers = headers_for(alice)
    path = f"/ws/sessions/{session.id}/{kind}/"
    first_frame = "hello" if kind == "terminal" else "session"

    async def scenario() -> None:
        warm = Socket(path, headers)  # the process's pools now hold connections to this Redis
        assert (await warm.connect())[0]
        assert (await warm.text())["type"] == first_frame
        await warm.leave()
        await asyncio.to_thread(redis_server.restart)
        # The consumers' own pool recovers first (as a busy process's would, on other sockets'
        # commands): what fails next is the channel layer's group join, on its stale connection.
        for _ in range(5):
            with contextlib.suppress(RedisError):
                await shared_redis().ping()
                break

        outcomes = []
        for _ in range(3):  # each pooled connection fails once; a page retries until one works
            socket = Socket(path, headers)
            accepted, code = await socket.connect()
            if not accepted:
                assert code == CLOSE_UNAVAILABLE
                outcomes.append("refused")
                continue
            frame = await socket.output()
            if frame.get("text", "").find('"unavailable"') >= 0:
                assert (await socket.close_code()) == CLOSE_UNAVAILABLE
                outcomes.append("told to retry")
            else:
                assert first_frame in frame.get("text", ""), frame
                outcomes.append("works")
            await socket.leave()
        assert outcomes[-1] == "works", outcomes

    with caplog.at_level(logging.WARNING):
        run(scenario)  # an error escaping the consumer would be raised here
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
