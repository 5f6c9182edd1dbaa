"""portal/http_handler.py: requests through the real ASGI handler, in-process."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from django.http import HttpResponse

from portal import http_handler
from portal.asgi import django_asgi_app

Message = dict[str, Any]


def http_scope(path: str) -> Message:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 40000), "server": ("testserver", 80),
    }  # fmt: skip


def gone_after_the_body(wait: bool = False, once: threading.Event | None = None) -> Callable[[], Awaitable[Message]]:
    """The request's body, then the client's disconnect: at once, once `once` is set, or never (`wait`)."""
    messages: list[Message] = [{"type": "http.disconnect"}, {"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> Message:
        if len(messages) == 1 and wait:
            await asyncio.Event().wait()  # the client stays connected
        while len(messages) == 1 and once is not None and not once.is_set():
            await asyncio.sleep(0.01)
        return messages.pop()

    return receive


def sent_to(sent: list[Message]) -> Callable[[Message], Awaitable[None]]:
    async def send(message: Message) -> None:
        sent.append(message)

    return send


async def ignore(_message: Message) -> None:
    return None


async def get(path: str) -> list[Message]:
    sent: list[Message] = []
    await django_asgi_app(http_scope(path), gone_after_the_body(wait=True), sent_to(sent))
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


def test_a_request_given_up_while_its_view_runs_ends_with_the_view_and_frees_its_thread() -> None:
    # The client goes away mid-view: the handler returns only once the view has ended (asgiref
    # awaits a cancelled call's thread), so the thread it keeps is free for the next request.
    view_began = threading.Event()
    ran_on: list[int] = []

    def slow_then_fast(request: Any) -> Any:
        ran_on.append(threading.get_ident())
        if len(ran_on) == 1:
            view_began.set()
            time.sleep(0.5)
        return HttpResponse("ok")

    async def scenario() -> float:
        handler = http_handler.SyncChainASGIHandler()
        handler.get_response = slow_then_fast  # type: ignore[method-assign]
        started = time.monotonic()
        await handler(http_scope("/slow"), gone_after_the_body(once=view_began), ignore)
        took = time.monotonic() - started
        sent: list[Message] = []
        await asyncio.wait_for(handler(http_scope("/fast"), gone_after_the_body(wait=True), sent_to(sent)), 5)
        assert sent[0]["status"] == 200
        return took

    assert asyncio.run(scenario()) >= 0.5
    assert ran_on[0] == ran_on[1]  # the same thread, free again
