"""Websockets of a lab session: live events, and the terminal wired to the VM's serial console.

Both check who may see the session before joining its group: the owner drives it, staff may
observe (read-only); everyone else is refused with 4403 without learning whether it exists.
(portal/asgi.py has refused a foreign Origin before any of this runs.) Every limit a socket has
comes from labs/limited_consumer.py; the terminal adds the queue of keystrokes for the relay.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from redis.exceptions import RedisError

from labs.limited_consumer import CLOSE_VM_GONE, SLOT_REFRESH_S, SLOT_TTL_S, LimitedConsumer, shared_redis
from labs.models import LabSession
from labs.redis_names import (
    buffer_key,
    events_group,
    input_key,
    offset_key,
    size_key,
    terminal_group,
    watchers_key,
)
from labs.services import access
from labs.services.session_events import greetings, session_payload
from labs.socket_frames import BadFrame, parse_control
from labs.states import ENDED, SessionState

log = logging.getLogger(__name__)

MAX_COLS, MAX_ROWS = 1000, 500
INPUT_TTL_S = 60  # keystrokes nobody pops (no relay) go with their list
# Keys go to the guest from here: while queued or restoring a checkpoint there is no VM to take them.
# Requested and provisioning are accepted: the relay holds them until step 1's checkpoint is taken.
TAKES_INPUT = frozenset({SessionState.REQUESTED, SessionState.PROVISIONING, SessionState.READY})


@database_sync_to_async
def _load(user: Any, session_id: str) -> tuple[LabSession, bool] | None:
    """The session the user may see and whether they may drive it; None for anyone else."""
    try:
        return access.session_for_user(user, session_id)
    except access.SessionNotFound:
        return None


class SessionConsumer(LimitedConsumer[tuple[LabSession, bool]]):
    """A socket of one session (the URL's session_id), open to whoever may see it."""

    async def load(self, user: Any) -> tuple[LabSession, bool] | None:
        self.session_id = self.scope["url_route"]["kwargs"]["session_id"]
        return await _load(user, self.session_id)


class SessionEventsConsumer(SessionConsumer):
    """Pushes every transition, progress stage and step result of one session; messages for the
    learner; and whether someone is watching their terminal."""

    kind = "events"

    async def connect(self) -> None:
        loaded = await self.admit()
        if loaded is None:
            return
        await self.join(events_group(self.session_id))
        # The state as of now, so a page that loaded a moment ago misses nothing.
        payload = await database_sync_to_async(session_payload)(loaded[0])
        self.push_json({"type": "session", "session": payload})
        for frame in await database_sync_to_async(greetings)(loaded[0]):
            self.push_json(frame)
        try:
            watching = await shared_redis().zcount(watchers_key(self.session_id), time.time(), "+inf")
        except RedisError:
            watching = 0
        if watching:
            self.push_json({"type": "watchers", "count": watching})

    async def handle(self, text_data: str | None, bytes_data: bytes | None) -> None:
        if bytes_data is not None:
            raise BadFrame("This socket only sends: it takes no binary frames.")
        message = parse_control(text_data or "")
        raise BadFrame(f"Unknown message type {message['type'][:40]!r}: this socket only sends.")

    async def session_event(self, event: dict[str, Any]) -> None:
        self.push_json({"type": "session", "session": event["session"]})

    async def session_progress(self, event: dict[str, Any]) -> None:
        self.push_json({"type": "progress", "stage": event["stage"], "detail": event["detail"]})

    async def session_message(self, event: dict[str, Any]) -> None:
        self.push_json({"type": "message", "message": event["message"]})

    async def session_watchers(self, event: dict[str, Any]) -> None:
        self.push_json({"type": "watchers", "count": event["count"]})


class TerminalConsumer(SessionConsumer):
    """Binary frames carry console bytes both ways; text frames carry JSON control messages.

    An observer (staff, or a class's instructor) reads and never writes; while one is connected,
    the learner's page says their terminal is being watched (a claim in `watchers_key`, refreshed
    like the per-user socket count, so a dead web process's observers lapse)."""

    kind = "terminal"

    async def connect(self) -> None:
        self.sent_upto = 0
        self.watching = False
        loaded = await self.admit()
        if loaded is None:
            return
        session, self.may_drive = loaded
        self.state = session.state
        if session.state in ENDED:
            self._gone(str(session.get_state_display()))
            return
        # Join first, then read the scrollback: live bytes already in it are dropped by offset.
        await self.join(terminal_group(self.session_id))
        await self.join(events_group(self.session_id))  # the state: input only while a VM takes it
        async with shared_redis().pipeline(transaction=True) as pipe:
            pipe.get(buffer_key(self.session_id))
            pipe.get(offset_key(self.session_id))
            scrollback, end = await pipe.execute()
        self.sent_upto = int(end or 0)
        self.push_json({"type": "hello", "observer": not self.may_drive})
        if scrollback:
            self.push(scrollback)
        if not self.may_drive:
            await self._watch(True)
            self.tasks.append(asyncio.create_task(self._keep_watching()))

    async def disconnect(self, code: int) -> None:
        await super().disconnect(code)
        if self.watching:
            with contextlib.suppress(RedisError):
                await self._watch(False)

    async def _watch(self, on: bool) -> None:
        """Claim (or drop) this observer's place among the session's watchers; tell the learner's page."""
        key, now = watchers_key(self.session_id), time.time()
        async with shared_redis().pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now)
            if on:
                pipe.zadd(key, {self.channel_name: now + SLOT_TTL_S})
            else:
                pipe.zrem(key, self.channel_name)
            pipe.zcard(key)
            pipe.expire(key, SLOT_TTL_S)
            *_, count, _ = await pipe.execute()
        self.watching = on
        await self.channel_layer.group_send(
            events_group(self.session_id), {"type": "session.watchers", "count": int(count)}
        )

    async def _keep_watching(self) -> None:
        while True:
            await asyncio.sleep(SLOT_REFRESH_S)
            try:
                await shared_redis().zadd(watchers_key(self.session_id), {self.channel_name: time.time() + SLOT_TTL_S})
                await shared_redis().expire(watchers_key(self.session_id), SLOT_TTL_S)
            except RedisError:
                log.warning("session %s: could not refresh an observer's claim", self.session_id, exc_info=True)

    async def handle(self, text_data: str | None, bytes_data: bytes | None) -> None:
        if bytes_data is not None:
            await self._forward(bytes_data)
            return
        message = parse_control(text_data or "")
        kind, data = message["type"], message.get("data")
        if kind == "resize":
            await self._resize(message.get("cols"), message.get("rows"))
        elif kind == "input":
            if not isinstance(data, str):
                raise BadFrame('"input" needs a string "data".')
            try:  # xterm hands over text (IME compositions, pastes): UTF-8 is what the guest's tty reads
                await self._forward(data.encode())
            except UnicodeEncodeError:
                raise BadFrame('"input" data is not valid Unicode text (a lone surrogate).') from None
        elif kind == "input_b64":
            if not isinstance(data, str):
                raise BadFrame('"input_b64" needs a string "data".')
            try:
                raw = base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise BadFrame('"input_b64" data is not valid base64.') from None
            await self._forward(raw)
        else:
            raise BadFrame(f"Unknown message type {kind[:40]!r}: use input, input_b64 or resize.")

    async def _forward(self, data: bytes) -> None:
        if not self.may_drive:
            self.tell("notice", "read_only", "You are observing this session: what you type is not sent.")
            return
        if not data:
            return
        if self.state not in TAKES_INPUT:
            label = SessionState(self.state).label
            self.tell("notice", "not_ready", f"The VM is not taking input ({label}): {len(data)} bytes dropped.")
            return
        key, limit = input_key(self.session_id), settings.LABS_TERMINAL_INPUT_QUEUE
        try:
            async with shared_redis().pipeline(transaction=True) as pipe:
                pipe.rpush(key, data)
                pipe.ltrim(key, 0, limit - 1)  # over the limit, the newest (this frame) goes
                pipe.expire(key, INPUT_TTL_S)
                length, _, _ = await pipe.execute()
        except RedisError:  # Redis away: the relay could not have read it either
            self.tell("error", "input_failed", "Input could not be delivered; try again.", logging.WARNING)
            return
        if length > limit:
            message = f"The VM is not reading input ({limit} messages wait): {len(data)} bytes dropped."
            self.tell("notice", "input_queue", message, level=logging.WARNING, limit=limit)

    async def _resize(self, cols: Any, rows: Any) -> None:
        """Queue the window size for the guest's tty: the host's console relay applies the latest."""
        if not (type(cols) is int and type(rows) is int and 2 <= cols <= MAX_COLS and 1 <= rows <= MAX_ROWS):
            raise BadFrame(f'"resize" needs whole numbers: cols 2-{MAX_COLS}, rows 1-{MAX_ROWS}.')
        if not self.may_drive:
            return  # an observer's window does not size the learner's tty
        key = size_key(self.session_id)
        async with shared_redis().pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.rpush(key, f"{cols} {rows}")
            pipe.expire(key, 24 * 3600)
            await pipe.execute()

    async def term_output(self, event: dict[str, Any]) -> None:
        data: bytes = event["data"]
        offset: int = event["offset"]
        skip = self.sent_upto - offset  # bytes of this chunk the scrollback already delivered
        if skip < len(data) and not self.closing:
            self.sent_upto = max(self.sent_upto, offset + len(data))
            self.push(data[max(skip, 0) :])
        if self.closing:
            # Fell behind, gone or signed out: no more output for this client (what it missed
            # comes back with the scrollback when it reconnects).
            await self.leave(terminal_group(self.session_id))

    async def session_event(self, event: dict[str, Any]) -> None:
        self.state = event["session"]["state"]

    async def session_progress(self, event: dict[str, Any]) -> None:
        pass  # the events socket shows progress (and messages, and watchers)

    async def session_message(self, event: dict[str, Any]) -> None:
        pass

    async def session_watchers(self, event: dict[str, Any]) -> None:
        pass

    async def term_gone(self, event: dict[str, Any]) -> None:
        self._gone(event.get("reason", ""))

    def _gone(self, reason: str) -> None:
        self.push_json({"type": "gone", "reason": reason})
        self.close_after(CLOSE_VM_GONE, "the VM is gone")
