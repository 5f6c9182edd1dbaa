"""What every websocket of the site shares: admission, and its limits (labs.consumers and
classes.consumers build on it).

One learner must not hurt another, so every socket is bounded, and each limit it hits is told to
the page (a JSON `{"type": "notice" | "error", "code", "message"}` frame, or a close code with a
reason) and logged:
- what comes in: frame size, and a byte rate (a token bucket per socket); a malformed frame gets an
  error, never a traceback;
- how many: at most LABS_WS_PER_USER terminal and as many events sockets per user, counted in Redis
  so that every web process sees them (close 4429 past it);
- the keystrokes waiting in Redis for the host's console relay (the terminal, labs.consumers): a
  bounded list; the rest dropped;
- what waits to go out: frames to a client are queued in the consumer (console output coalesced
  into one frame) and sent by one writer task, so a client that does not read stalls that task,
  never the consumer's own loop that drains the channel layer. Past LABS_WS_MAX_PENDING_BYTES the
  consumer leaves the terminal group, says "resync" and closes 4408: the page reconnects and gets
  the scrollback. The same happens when the consumer's loop itself falls behind (its process short
  of CPU) by more than CHANNEL_QUEUE_MAX_BYTES in its channel (portal/channel_layer.py);
- logging out closes the user's sockets (4401), through the channel-layer group `user.<id>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from typing import Any, ClassVar, Generic, TypeVar

import redis.asyncio as aioredis
from asgiref.sync import async_to_sync
from asgiref.typing import WebSocketConnectEvent
from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver
from redis.exceptions import RedisError

from labs.redis_names import (
    sockets_key,
    user_group,
)
from labs.socket_frames import BadFrame, Close, Outbox, TokenBucket, frame_size

log = logging.getLogger(__name__)

CLOSE_SIGNED_OUT = 4401  # the user logged out: the page stops reconnecting
CLOSE_FORBIDDEN = 4403
CLOSE_RESYNC = 4408  # the client fell behind the console's output: reconnect for the scrollback
CLOSE_VM_GONE = 4410  # the VM no longer exists: the page stops reconnecting
CLOSE_TOO_MANY = 4429  # over the user's number of open sockets
CLOSE_UNAVAILABLE = 1011  # Redis is away
# A socket's claim on its user's count lapses unless refreshed: a web process that dies leaves none.
SLOT_TTL_S, SLOT_REFRESH_S = 90, 30
RATE_PAUSE_MAX_S = 1.0  # the longest a socket over its input rate is left unread (its output waits too)
NOTICE_EVERY_S = 1.0  # one message (and log line) per code per second: a flood is not answered by a flood
REDIS_POOL_SIZE = 32  # connections per web process shared by all its sockets' Redis commands

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[str, aioredis.Redis]] = weakref.WeakKeyDictionary()


def shared_redis() -> aioredis.Redis:
    """The process's one Redis client for websockets (one per event loop: asyncio connections are
    bound to theirs): each command borrows a pooled connection, a socket holds none of its own."""
    loop = asyncio.get_running_loop()
    current = _clients.get(loop)
    if current is None or current[0] != settings.REDIS_URL:
        pool = aioredis.BlockingConnectionPool.from_url(settings.REDIS_URL, max_connections=REDIS_POOL_SIZE, timeout=5)
        current = _clients[loop] = (settings.REDIS_URL, aioredis.Redis(connection_pool=pool))
    return current[1]


async def close_shared_redis() -> None:
    """Close this loop's client (tests end their loops; a server's loop lives as long as the process)."""
    current = _clients.pop(asyncio.get_running_loop(), None)
    if current is not None:
        await current[1].aclose(close_connection_pool=True)


Subject = TypeVar("Subject")


class LimitedConsumer(AsyncWebsocketConsumer, Generic[Subject]):
    """What every socket shares: admission (access, then the per-user count), the byte-rate and
    frame-size limits on what comes in, the bounded outbox and its writer, and closing on logout.

    A subclass says what it serves and who may open it in `load` (a session here; other apps'
    consumers, such as a class's live grid, load their own subject)."""

    kind: ClassVar[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session_id = ""
        self.user_id: int | None = None
        self.joined: list[str] = []
        self.claimed = False
        self.closing = False
        self.outbox = Outbox()
        self.tasks: list[asyncio.Task[None]] = []
        self.told: dict[str, float] = {}
        self.bucket = TokenBucket(settings.LABS_WS_INPUT_RATE_BPS, settings.LABS_WS_INPUT_BURST_BYTES)

    async def websocket_connect(self, message: WebSocketConnectEvent) -> None:
        # After a Redis restart the first command on each pooled connection that went stale fails
        # (channels_redis's group join, say): the page is told to retry, nothing escapes to the server.
        try:
            await super().websocket_connect(message)
        except (RedisError, OSError) as exc:
            if self.tasks:  # accepted: the writer says why, then closes
                self.tell("error", "unavailable", "The lab service is unavailable; retrying.", logging.WARNING)
                self.close_after(CLOSE_UNAVAILABLE, "service unavailable")
            else:
                log.warning("%s socket of %s: Redis unavailable (%s): refused", self.kind, self.session_id, exc)
                await self.close(code=CLOSE_UNAVAILABLE)

    async def dispatch(self, message: Any) -> None:
        """Each message to its handler, without the thread hop channels (4.2+) adds before every one.

        channels runs close_old_connections through the process's one thread for sync code before
        each message a consumer handles: for every keystroke and every console chunk, queued behind
        every other socket's database work in that thread. These consumers reach the database only
        through database_sync_to_async, which closes old connections around each call itself.
        (In bench/isolation.py that hop was a quarter of the web event loop's time under the abuse.)"""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def load(self, user: Any) -> Subject | None:
        """What the socket serves, if `user` may open it; None refuses it (4403)."""
        raise NotImplementedError

    async def admit(self) -> Subject | None:
        """What `load` gave, with the socket accepted and counted; None when it was refused
        (4403 before accepting, or 4429 with a message after)."""
        user = self.scope.get("user")
        loaded = await self.load(user) if user is not None else None
        if loaded is None or user is None:
            log.info("websocket %s of %s refused: no access", self.kind, self.session_id)
            await self.close(code=CLOSE_FORBIDDEN)
            return None
        self.user_id = int(user.pk)
        await self.accept()
        self.tasks.append(asyncio.create_task(self._write_loop()))
        try:
            open_now = await self._claim_slot()
        except RedisError:  # Redis away: nothing a socket does would work; the page retries
            self.tell("error", "unavailable", "The lab service is unavailable; retrying.", logging.WARNING)
            self.close_after(CLOSE_UNAVAILABLE, "service unavailable")
            return None
        if open_now is not None:
            limit = settings.LABS_WS_PER_USER
            message = f"Too many open {self.kind} connections ({open_now} open, {limit} at most): close other lab tabs."
            self.tell("error", "too_many_sockets", message, level=logging.WARNING, limit=limit)
            self.close_after(CLOSE_TOO_MANY, f"too many {self.kind} sockets")
            return None
        self.tasks.append(asyncio.create_task(self._keep_slot()))
        await self.join(user_group(self.user_id))
        return loaded

    async def join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.joined.append(group)

    async def leave(self, group: str) -> None:
        if group in self.joined:
            self.joined.remove(group)
            await self.channel_layer.group_discard(group, self.channel_name)

    async def disconnect(self, code: int) -> None:
        self.closing = True
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for group in list(self.joined):
            with contextlib.suppress(RedisError, OSError):  # Redis away: its groups' members expire
                await self.leave(group)
        if self.claimed and self.user_id is not None:
            with contextlib.suppress(RedisError):
                await shared_redis().zrem(sockets_key(self.user_id, self.kind), self.channel_name)

    # --- Counting sockets per user ------------------------------------------------------------

    async def _claim_slot(self) -> int | None:
        """Count this socket; None if within the limit, else how many are open (it is not counted).

        Each claim is one MULTI: claims are applied one after another, so two sockets opening at
        once cannot both take the last place."""
        assert self.user_id is not None
        key, now = sockets_key(self.user_id, self.kind), time.time()
        async with shared_redis().pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now)  # claims of sockets whose process died
            pipe.zadd(key, {self.channel_name: now + SLOT_TTL_S})
            pipe.zcard(key)
            pipe.expire(key, SLOT_TTL_S)
            _, _, count, _ = await pipe.execute()
        if count <= settings.LABS_WS_PER_USER:
            self.claimed = True
            return None
        await shared_redis().zrem(key, self.channel_name)
        return int(count) - 1

    async def _keep_slot(self) -> None:
        """Refresh the claim while the socket lives, even when its writer is stuck on a client
        that does not read: such a socket still holds memory, so it still counts."""
        assert self.user_id is not None
        key = sockets_key(self.user_id, self.kind)
        while True:
            await asyncio.sleep(SLOT_REFRESH_S)
            try:
                async with shared_redis().pipeline(transaction=True) as pipe:
                    pipe.zadd(key, {self.channel_name: time.time() + SLOT_TTL_S})
                    pipe.expire(key, SLOT_TTL_S)
                    await pipe.execute()
            except RedisError:
                log.warning("user %s: could not refresh a %s socket's claim", self.user_id, self.kind, exc_info=True)

    # --- Going out: one writer per socket -----------------------------------------------------

    def push(self, item: str | bytes) -> None:
        """Queue a frame for the client; past the pending limit, the client is told to resync."""
        if self.closing:
            return
        self.outbox.put(item)
        if self.outbox.size > settings.LABS_WS_MAX_PENDING_BYTES:
            self.fell_behind()

    def push_json(self, message: dict[str, Any]) -> None:
        self.push(json.dumps(message))

    def fell_behind(self, why: str = "") -> None:
        why = why or f"{self.outbox.size} bytes unsent to a slow client (limit {settings.LABS_WS_MAX_PENDING_BYTES})"
        log.warning("%s socket of session %s: %s: resync", self.kind, self.session_id, why)
        self.outbox.clear()
        self.outbox.put(json.dumps({"type": "resync"}))
        self.close_after(CLOSE_RESYNC, "fell behind: reconnect for the scrollback")

    def close_after(self, code: int, reason: str) -> None:
        """Close once what is queued before is sent; nothing more is queued or read."""
        if not self.closing:
            self.closing = True
            self.outbox.put(Close(code, reason))

    async def channel_overflow(self, event: dict[str, Any]) -> None:
        """This consumer fell behind its channel-layer queue (portal/channel_layer.py): what waited
        there was dropped, so the client resyncs, and the socket takes no more group messages."""
        self.fell_behind(f"over {settings.CHANNEL_QUEUE_MAX_BYTES} bytes waited in its channel")
        for group in list(self.joined):
            await self.leave(group)

    async def _write_loop(self) -> None:
        try:
            while True:
                item = await self.outbox.get()
                if isinstance(item, Close):
                    await self.close(code=item.code, reason=item.reason)
                    return
                if isinstance(item, str):
                    await self.send(text_data=item)
                else:
                    await self.send(bytes_data=item)
        except asyncio.CancelledError:
            raise
        except Exception:  # the client went away mid-send; its disconnect follows
            log.debug("%s socket of session %s: send failed", self.kind, self.session_id, exc_info=True)

    def tell(self, kind: str, code: str, message: str, level: int = logging.INFO, **extra: Any) -> None:
        """A notice or error the page shows, and its log line: at most one per code per second."""
        now = time.monotonic()
        if now - self.told.get(code, -NOTICE_EVERY_S) < NOTICE_EVERY_S:
            return
        self.told[code] = now
        log.log(level, "%s socket of session %s, user %s: %s %s: %s",
                self.kind, self.session_id, self.user_id, kind, code, message)  # fmt: skip
        self.push_json({"type": kind, "code": code, "message": message, **extra})

    # --- Coming in ----------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return
        size, limit = frame_size(text_data, bytes_data), settings.LABS_WS_MAX_FRAME_BYTES
        if size > limit:
            message = f"A frame of {size} bytes was dropped: at most {limit} at once."
            self.tell("error", "frame_size", message, level=logging.WARNING, limit=limit)
            return
        if not self.bucket.take(size):
            rate, burst = settings.LABS_WS_INPUT_RATE_BPS, settings.LABS_WS_INPUT_BURST_BYTES
            message = f"Sending too fast: {size} bytes dropped (at most {rate} bytes/s, bursts of {burst})."
            self.tell("notice", "input_rate", message, level=logging.WARNING, limit=rate)
            # Then stop reading this socket until the bucket refills (at most RATE_PAUSE_MAX_S): a
            # client that keeps sending meets TCP backpressure, instead of this process reading and
            # dropping every frame (~5,000 of 64 KiB a second from one flooder: bench/isolation.py)
            # on the CPU that every other socket here shares.
            await asyncio.sleep(min(RATE_PAUSE_MAX_S, self.bucket.wait_s(size)))
            return
        try:
            await self.handle(text_data, bytes_data)
        except BadFrame as exc:
            self.tell("error", "bad_frame", str(exc))

    async def handle(self, text_data: str | None, bytes_data: bytes | None) -> None:
        raise NotImplementedError

    async def user_logout(self, event: dict[str, Any]) -> None:
        log.info("%s socket of session %s: user %s logged out, closing", self.kind, self.session_id, self.user_id)
        self.push_json({"type": "error", "code": "signed_out", "message": "You signed out: sign in again."})
        self.close_after(CLOSE_SIGNED_OUT, "signed out")


@receiver(user_logged_out, dispatch_uid="labs.limited_consumer.close_sockets_on_logout")
def close_sockets_on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """Every websocket the user holds open (any tab, any web process) closes when they log out."""
    layer = get_channel_layer()
    if user is None or layer is None:
        return
    try:
        async_to_sync(layer.group_send)(user_group(user.pk), {"type": "user.logout"})
    except Exception:  # the logout itself must not fail because Redis is away
        log.warning("logout of user %s: could not tell their websockets", user.pk, exc_info=True)
