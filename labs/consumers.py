"""Websockets of a lab session: live events, and the terminal wired to the VM's serial console.

Both check who may see the session before joining its group: the owner drives it, staff may
observe (read-only); everyone else is refused with 4403 without learning whether it exists.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from labs.models import LabSession
from labs.redis_names import buffer_key, events_group, input_key, offset_key, size_key, terminal_group
from labs.services import access
from labs.services.session_events import session_payload
from labs.states import ENDED

CLOSE_FORBIDDEN = 4403
CLOSE_VM_GONE = 4410  # the VM no longer exists: the page stops reconnecting
MAX_INPUT_BYTES = 64 * 1024  # a large paste, but not an unbounded one
MAX_COLS, MAX_ROWS = 1000, 500


@database_sync_to_async
def _load(user: Any, session_id: str) -> tuple[LabSession, bool] | None:
    """The session the user may see and whether they may drive it; None for anyone else."""
    try:
        return access.session_for_user(user, session_id)
    except access.SessionNotFound:
        return None


class SessionEventsConsumer(AsyncWebsocketConsumer):
    """Pushes every transition, progress stage and step result of one session."""

    async def connect(self) -> None:
        self.session_id: str = self.scope["url_route"]["kwargs"]["session_id"]
        loaded = await _load(self.scope.get("user"), self.session_id)
        if loaded is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.channel_layer.group_add(events_group(self.session_id), self.channel_name)
        await self.accept()
        # The state as of now, so a page that loaded a moment ago misses nothing.
        payload = await database_sync_to_async(session_payload)(loaded[0])
        await self.send(text_data=json.dumps({"type": "session", "session": payload}))

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(events_group(self.session_id), self.channel_name)

    async def session_event(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({"type": "session", "session": event["session"]}))

    async def session_progress(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({"type": "progress", "stage": event["stage"], "detail": event["detail"]}))


class TerminalConsumer(AsyncWebsocketConsumer):
    """Binary frames carry console bytes both ways; text frames carry JSON control messages."""

    async def connect(self) -> None:
        self.session_id = self.scope["url_route"]["kwargs"]["session_id"]
        self.joined = False
        loaded = await _load(self.scope.get("user"), self.session_id)
        if loaded is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        session, self.may_drive = loaded
        await self.accept()
        if session.state in ENDED:
            await self._gone(str(session.get_state_display()))
            return
        self.redis = aioredis.Redis.from_url(settings.REDIS_URL)
        # Join first, then read the scrollback: live bytes already in it are dropped by offset.
        await self.channel_layer.group_add(terminal_group(self.session_id), self.channel_name)
        self.joined = True
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(buffer_key(self.session_id))
            pipe.get(offset_key(self.session_id))
            scrollback, end = await pipe.execute()
        self.sent_upto = int(end or 0)
        await self.send(text_data=json.dumps({"type": "hello", "observer": not self.may_drive}))
        if scrollback:
            await self.send(bytes_data=scrollback)

    async def disconnect(self, code: int) -> None:
        if self.joined:
            await self.channel_layer.group_discard(terminal_group(self.session_id), self.channel_name)
            await self.redis.aclose()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.may_drive:
            return  # observers watch; they never type into a learner's VM
        if bytes_data is not None:
            await self._forward(bytes_data)
            return
        try:
            message = json.loads(text_data or "")
        except json.JSONDecodeError:
            return
        if message.get("type") == "input" and isinstance(message.get("data"), str):
            # xterm hands over text (IME compositions, pastes): UTF-8 is what the guest's tty reads.
            await self._forward(message["data"].encode())
        elif message.get("type") == "input_b64" and isinstance(message.get("data"), str):
            await self._forward(base64.b64decode(message["data"], validate=False))
        elif message.get("type") == "resize":
            cols, rows = message.get("cols"), message.get("rows")
            if type(cols) is int and type(rows) is int and 2 <= cols <= MAX_COLS and 1 <= rows <= MAX_ROWS:
                await self._request_resize(cols, rows)

    async def _forward(self, data: bytes) -> None:
        if not data or len(data) > MAX_INPUT_BYTES:
            return
        key = input_key(self.session_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(key, data)
            pipe.expire(key, 60)
            await pipe.execute()

    async def _request_resize(self, cols: int, rows: int) -> None:
        """Queue the window size for the guest's tty: the host's console relay applies the latest."""
        key = size_key(self.session_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.rpush(key, f"{cols} {rows}")
            pipe.expire(key, 24 * 3600)
            await pipe.execute()

    async def term_output(self, event: dict[str, Any]) -> None:
        data: bytes = event["data"]
        offset: int = event["offset"]
        skip = self.sent_upto - offset  # bytes of this chunk the scrollback already delivered
        if skip >= len(data):
            return
        await self.send(bytes_data=data[max(skip, 0) :])
        self.sent_upto = max(self.sent_upto, offset + len(data))

    async def term_gone(self, event: dict[str, Any]) -> None:
        await self._gone(event.get("reason", ""))

    async def _gone(self, reason: str) -> None:
        await self.send(text_data=json.dumps({"type": "gone", "reason": reason}))
        await self.close(code=CLOSE_VM_GONE)
