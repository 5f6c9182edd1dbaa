"""An ASGI handler that runs Django's middleware chain synchronously, in one thread hop, on a
thread that outlives the request.

Every view here is synchronous and WhiteNoise's middleware is sync-only. Django's default ASGI
handler runs dual-capable middleware in async mode, which hops to a worker thread for each
process_request/process_response (~30 hops per page; measured 4.0 ms vs 1.9 ms per page
in-process). Building the chain in sync mode and crossing into the thread pool once per request
keeps the async server for websockets without paying for it on every page.

Django gives each request a ThreadSensitiveContext of its own, and asgiref then starts a thread
for the request's sync code and another to join it at the end: both Thread.start calls wait, in
the event loop every socket of the process shares, until the new thread runs (py-spy under
bench/isolation.py's abuse: ~5 % of the loop's time, in stalls that grow with the host's load).
Here each request's context gets a single-thread executor that later requests use again
(asgiref's `ThreadSensitiveContext(executor=...)`): one request at a time on it, as before.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase

IDLE_EXECUTORS_MAX = 8  # threads kept for requests to come (each may keep a database connection)


class SyncChainASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self._idle: list[ThreadPoolExecutor] = []

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # Django 5.2's ASGIHandler.__call__, with an executor given to the request's context.
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = self._idle.pop() if self._idle else ThreadPoolExecutor(1, thread_name_prefix="request")
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            # Its thread is free: a request whose client went away ends only once its view has
            # (asgiref awaits a cancelled call's thread), so no request waits behind another's.
            if len(self._idle) < IDLE_EXECUTORS_MAX:
                self._idle.append(executor)
            else:
                executor.shutdown(wait=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        # thread_sensitive: the request's own thread (its context's executor, above).
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)
