"""Each client's share of a web process, enforced before Django sees a request.

A web process serves every learner on it: a script that fires requests as fast as it can, or
dozens at once, took the CPU and the thread pool the others' pages, clicks and terminal echoes
need (12 concurrent requests in bursts put another learner's echo p95 at 133 ms; 60 refused
checks a second cost 0.7 of a core, each refusal paying for the whole middleware chain).

So every HTTP request and websocket open is counted here, in the event loop, against its client:
a signed-in user, once a response has shown whose session cookie it carries (LearnClients, in
Django's chain, tells this middleware); anything else against its address, all anonymous and
unknown cookies of an address together. Cookies are not trusted before Django has seen them: a
client inventing them stays one anonymous address, and only that address's anonymous requests
meet its limit (a class behind one NAT signs in and is then counted user by user).
  - at most WEB_CLIENT_CONCURRENCY requests of a user run at once (WEB_ADDRESS_CONCURRENCY
    anonymous ones of an address); as many more as WEB_CLIENT_WAITING allows wait here, costing
    no thread, and the rest are refused;
  - at most WEB_CLIENT_RATE requests and websocket opens per WEB_CLIENT_RATE_WINDOW_S
    (WEB_ADDRESS_RATE for an address); static files are not counted, a page's own assets would
    use up the allowance, but they take a place under the concurrency bound.
A refused request gets 429 with Retry-After and a message in the client's language, a refused
websocket close 4429 (the pages wait and reconnect), and the log gets one line per client and window.
The refusal is held for WEB_REFUSAL_HOLD_MS first (while the client has fewer held than it may
have waiting; past that it is told at once): a script that asks again as soon as it is answered
then costs one refusal per connection and hold instead of thousands a second (measured in
bench/isolation.py: the abuser's 300 refused checks and 150 refused sockets a second took ~0.4 of
the web process's core), and the wait costs a timer, no thread.

Counted in the process (MovingWindows, below), not in Redis: what is protected is this process,
and a shared counter would cost a Redis round trip on every request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from asgiref.typing import (
    ASGI3Application,
    ASGIReceiveCallable,
    ASGISendCallable,
    Scope,
)
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.http.cookie import parse_cookie
from django.utils import translation
from django.utils.translation import gettext
from django.utils.translation.trans_real import get_supported_language_variant, parse_accept_lang_header

from portal.client_address import client_address

log = logging.getLogger(__name__)
CLOSE_TOO_MANY = 4429  # as labs' sockets close past a user's socket count: the pages wait and retry
SCOPE_KEY = "virtlab.client"  # (session digest, user id), put in the scope by LearnClients
KNOWN_S = 3600.0  # how long a session cookie stays known after its last request
KNOWN_MAX = 100_000  # digests kept (about 15 MiB at most)


@dataclass
class _Gate:
    places: asyncio.Semaphore
    users: int = 0  # holding a place or waiting for one


@dataclass
class Gates:
    """At most `size` holders per key at once and `waiting` more queued; a key's gate is dropped
    when nobody holds or waits, so memory follows the requests in flight."""

    size: int
    waiting: int
    _gates: dict[str, _Gate] = field(default_factory=dict)

    def enter(self, key: str) -> _Gate | None:
        """A place in the key's queue, or None when it is full."""
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _Gate(asyncio.Semaphore(self.size))
        if gate.users >= self.size + self.waiting:
            return None
        gate.users += 1
        return gate

    def leave(self, key: str, gate: _Gate) -> None:
        gate.users -= 1
        if gate.users == 0 and self._gates.get(key) is gate:
            del self._gates[key]

    def __len__(self) -> int:
        return len(self._gates)


@dataclass(frozen=True)
class Rate:
    amount: int
    window_s: float


class MovingWindows:
    """At most `rate.amount` hits per key in any `rate.window_s` seconds: the times of each key's
    recent hits, in this process; a key goes once its window holds none.

    Not the `limits` library's MemoryStorage (used here before): it expires entries in a
    threading.Timer that it starts again on a hit once the last one ran (10 ms), and Thread.start
    waits, in the event loop this runs in, until the new thread runs. Under bench/isolation.py's
    abuse those starts took ~4 % of the web event loop's time, more on a busy host."""

    def __init__(self) -> None:
        self._hits: dict[str, tuple[float, deque[float]]] = {}  # key -> (window, times, oldest first)
        self._swept = time.monotonic()

    def hit(self, rate: Rate, key: str) -> bool:
        """Count a hit; False (and not counted) when the window is full."""
        now = time.monotonic()
        hits = self._recent(rate, key, now)
        if len(hits) >= rate.amount:
            return False
        hits.append(now)
        self._sweep(now)
        return True

    def seconds_to_room(self, rate: Rate, key: str) -> float:
        """Until the next hit of `key` would be counted."""
        now = time.monotonic()
        hits = self._recent(rate, key, now)
        return hits[0] + rate.window_s - now if len(hits) >= rate.amount else 0.0

    def __len__(self) -> int:
        return len(self._hits)

    def _recent(self, rate: Rate, key: str, now: float) -> deque[float]:
        _, hits = self._hits.setdefault(key, (rate.window_s, deque()))
        while hits and hits[0] <= now - rate.window_s:
            hits.popleft()
        return hits

    def _sweep(self, now: float) -> None:
        """Drop the keys whose last hit is out of their window, at most once a second."""
        if now - self._swept < 1.0:
            return
        self._swept = now
        for key, (window_s, hits) in list(self._hits.items()):
            if not hits or hits[-1] <= now - window_s:
                del self._hits[key]


@dataclass(frozen=True)
class Refusal:
    why: str  # for the log
    retry_after_s: int


@dataclass(frozen=True)
class Client:
    key: str  # "user 12" or "address 198.51.100.7": also what the log says
    gates: Gates
    rate: Rate | None


class Known:
    """Session-cookie digests that a response has shown to be a signed-in user's: digest -> user
    id, for KNOWN_S after it was last seen, at most KNOWN_MAX of them (the least recent go first)."""

    def __init__(self) -> None:
        self._users: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def user(self, digest: str) -> int | None:
        entry = self._users.get(digest)
        if entry is None or entry[1] < time.monotonic():
            return None
        self._users.move_to_end(digest)
        return entry[0]

    def learn(self, digest: str, user_id: int) -> None:
        self._users[digest] = (user_id, time.monotonic() + KNOWN_S)
        self._users.move_to_end(digest)
        while len(self._users) > KNOWN_MAX:
            self._users.popitem(last=False)


class ClientShare:
    """ASGI middleware: the bounds above, around `app` (HTTP and websocket scopes)."""

    def __init__(self, app: ASGI3Application) -> None:
        self.app = app
        self.known = Known()
        self.users = Gates(settings.WEB_CLIENT_CONCURRENCY, settings.WEB_CLIENT_WAITING)
        # An address may have as many requests waiting as the users its concurrency would hold.
        users_per_address = max(1, settings.WEB_ADDRESS_CONCURRENCY // settings.WEB_CLIENT_CONCURRENCY)
        self.addresses = Gates(settings.WEB_ADDRESS_CONCURRENCY, settings.WEB_CLIENT_WAITING * users_per_address)
        self.windows = MovingWindows()
        window = settings.WEB_CLIENT_RATE_WINDOW_S
        self.user_rate = _rate(settings.WEB_CLIENT_RATE, window)
        self.address_rate = _rate(settings.WEB_ADDRESS_RATE, window)
        self.log_rate = Rate(1, window)  # one log line per client and window
        self.held: dict[str, int] = {}  # refusals each client has waiting to be told

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope.get("headers", [])}
        cookies = parse_cookie(headers.get("cookie", ""))
        peer = scope.get("client")
        address = client_address(peer[0] if peer else "", headers.get("x-forwarded-for", ""))
        session = cookies.get(settings.SESSION_COOKIE_NAME, "")
        user_id = self.known.user(session_digest(session)) if session else None
        client = Client(f"user {user_id}", self.users, self.user_rate) if user_id is not None else None
        client = client or Client(f"address {address}", self.addresses, self.address_rate)
        counted = not scope["path"].startswith(settings.STATIC_URL)
        refusal = self._over_rate(client) if counted else None
        gate = None
        if refusal is None and scope["type"] == "http":  # websockets are long-lived: labs' consumers
            gate = client.gates.enter(client.key)  # bound how many a user holds
            if gate is None:
                refusal = Refusal(f"{client.gates.size} requests running and {client.gates.waiting} waiting", 1)
        if refusal is not None:
            self._log(client, refusal, scope["path"])
            message = _message(refusal, _language(cookies, headers))
            await self._hold(client)
            if scope["type"] == "websocket":
                await _close_websocket(receive, send, message)
            else:
                await _refuse_http(scope["path"], send, refusal, message)
            return
        if gate is None:
            await self.app(scope, receive, send)
            return
        try:
            async with gate.places:  # waits here, on the event loop, for one of the client's places
                await self.app(scope, receive, send)
        finally:
            client.gates.leave(client.key, gate)
        learned = cast(dict[str, Any], scope).get(SCOPE_KEY)  # set by LearnClients, below
        if learned is not None:
            digest, user_id = learned
            self.known.learn(digest, user_id)

    async def _hold(self, client: Client) -> None:
        delay_s = settings.WEB_REFUSAL_HOLD_MS / 1000
        held = self.held.get(client.key, 0)
        if delay_s <= 0 or held >= client.gates.waiting:
            return
        self.held[client.key] = held + 1
        try:
            await asyncio.sleep(delay_s)
        finally:
            if self.held[client.key] > 1:
                self.held[client.key] -= 1
            else:
                del self.held[client.key]

    def _over_rate(self, client: Client) -> Refusal | None:
        if client.rate is None or self.windows.hit(client.rate, client.key):
            return None
        wait = max(1, math.ceil(self.windows.seconds_to_room(client.rate, client.key)))
        return Refusal(f"over {client.rate.amount} requests in {client.rate.window_s:g} s", wait)

    def _log(self, client: Client, refusal: Refusal, path: str) -> None:
        if self.windows.hit(self.log_rate, f"log {client.key}"):
            log.warning("%s refused, %s: %s", client.key, path[:200], refusal.why)


class LearnClients:
    """Django middleware, after authentication: tells ClientShare (through the ASGI scope it shares
    with Django's request) whose session cookie this is, once Django has checked it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        scope = getattr(request, "scope", None)  # ASGI requests only
        user = getattr(request, "user", None)
        if scope is not None and user is not None and user.is_authenticated and request.session.session_key:
            scope[SCOPE_KEY] = (session_digest(request.session.session_key), user.pk)  # the new key after a log-in
        return response


def session_digest(session_key: str) -> str:
    """Session ids are credentials: only a digest is kept."""
    return hashlib.blake2b(session_key.encode(), digest_size=16).hexdigest()


def _rate(amount: int, window_s: int) -> Rate | None:
    return Rate(amount, window_s) if amount > 0 else None


def _message(refusal: Refusal, language: str) -> str:
    with translation.override(language):
        return gettext("Too many requests from this browser at once. Wait %(seconds)d s and try again.") % {
            "seconds": refusal.retry_after_s
        }


def _language(cookies: dict[str, str], headers: dict[str, str]) -> str:
    """The language Django's LocaleMiddleware would pick from the cookie or Accept-Language."""
    wanted = [cookies.get(settings.LANGUAGE_COOKIE_NAME, "")]
    wanted += [code for code, _q in parse_accept_lang_header(headers.get("accept-language", "")[:500])]
    for code in wanted:
        if code and code != "*":
            try:
                return get_supported_language_variant(code)
            except LookupError:
                continue
    return str(settings.LANGUAGE_CODE)


async def _refuse_http(path: str, send: ASGISendCallable, refusal: Refusal, message: str) -> None:
    if path.startswith("/api/"):  # as the API's own errors: {"detail": ...}
        body, content_type = json.dumps({"detail": message}).encode(), b"application/json"
    else:
        body, content_type = message.encode(), b"text/plain; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", content_type),
                (b"retry-after", str(refusal.retry_after_s).encode()),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
            ],
            "trailers": False,
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _close_websocket(receive: ASGIReceiveCallable, send: ASGISendCallable, message: str) -> None:
    """Accepted, then closed with 4429 and the reason: a handshake refused before accepting reaches
    the page as 1006, which says nothing."""
    await receive()  # websocket.connect
    await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
    reason = message.encode()[:123].decode(errors="ignore")  # a close reason's bound
    await send({"type": "websocket.close", "code": CLOSE_TOO_MANY, "reason": reason})
