"""portal/http_handler.py: requests through the real ASGI handler, in-process."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from portal import http_handler
from portal.asgi import django_asgi_app

Message = dict[str, Any]


async def get(path: str) -> list[Message]:
    sent: list[Message] = []
    body = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> Message:
        if body:
            return body.pop()
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 40000), "server": ("testserver", 80),
    }  # fmt: skip
    await django_asgi_app(scope, receive, send)
    return sent


@pytest.mark.django_db(transaction=True)
def test_requests_reuse_their_threads_and_start_none(monkeypatch: pytest.MonkeyPatch) -> None:
    # Django's own handler starts two threads a request (one to run it, one to join it), each start
    # waiting in the event loop every socket shares until the thread runs.
    ran_on: list[str] = []
    real = http_handler.SyncChainASGIHandler.get_response

    def recorded(handler: Any, request: Any) -> Any:
        ran_on.append(threading.current_thread().name)
        return real(handler, request)

    monkeypatch.setattr(http_handler.SyncChainASGIHandler, "get_response", recorded)
    started: list[threading.Thread] = []

    async def scenario() -> None:
        await get("/accounts/login/")  # the first request starts its thread
        monkeypatch.setattr(threading.Thread, "start", started.append)
        for _ in range(5):
            assert (await get("/accounts/login/"))[0]["status"] == 200

    asyncio.run(scenario())
    assert started == []
    assert len(ran_on) == 6
    assert set(ran_on) == {ran_on[0]}, ran_on  # one thread, kept
    assert ran_on[0].startswith("request")


def test_a_burst_keeps_at_most_so_many_threads_for_later() -> None:
    async def scenario() -> int:
        handler = http_handler.SyncChainASGIHandler()
        release = asyncio.Event()

        async def held(*_args: Any) -> None:
            await release.wait()

        handler.handle = held  # type: ignore[method-assign,assignment]
        burst = [asyncio.create_task(handler({"type": "http"}, None, None)) for _ in range(20)]
        await asyncio.sleep(0.05)
        release.set()
        await asyncio.gather(*burst)
        return len(handler._idle)

    assert asyncio.run(scenario()) == http_handler.IDLE_EXECUTORS_MAX
