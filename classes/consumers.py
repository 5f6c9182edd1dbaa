"""The instructor's live grid over a websocket: every seat's row as it changes, and messages.

Open to the class's instructor and co-instructors only (anyone else: close 4403, never learning
whether the class exists); bounded like every socket (labs.limited_consumer.LimitedConsumer: frame size,
byte rate, sockets per user, a slow client told to resync, closed on logout).

Frames out: {"type": "grid", ...grid_json} on connect and on "refresh"; {"type": "seat", "row"}
when a seat changes or is taken; {"type": "seat_gone", "seat"} when a learner leaves or is removed;
{"type": "sent", "message"} for a message sent. Frames in:
{"type": "refresh"} (answered at most every REFRESH_EVERY_S; sooner gets a "refresh_rate" notice),
{"type": "message", "text", "seat": <seat id> | null}.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from channels.db import database_sync_to_async

from classes import access, live, messages
from classes.models import LabClass, Seat
from labs.limited_consumer import CLOSE_FORBIDDEN, LimitedConsumer
from labs.services.errors import LabError
from labs.socket_frames import BadFrame, parse_control

log = logging.getLogger(__name__)
# The page asks for the whole grid every 20 s; each answer is a query over every seat's sessions,
# so a socket asking faster (a loop, a script) is refused with a notice instead of answered.
REFRESH_EVERY_S = 2.0


@database_sync_to_async
def _class_for(user: Any, class_id: int) -> LabClass | None:
    return access.class_taught_by(user, class_id)


class NoLongerTeaching(Exception):
    """The user was removed from the class's teachers while their grid was open."""


@database_sync_to_async
def _grid(user: Any, class_id: int) -> dict[str, Any]:
    klass = access.class_taught_by(user, class_id)  # asked again: co-instructors can be removed
    if klass is None:
        raise NoLongerTeaching()
    return live.grid_json(klass)


@database_sync_to_async
def _send(user: Any, class_id: int, text: str, seat_id: int | None) -> dict[str, Any]:
    klass = access.class_taught_by(user, class_id)
    if klass is None:
        raise NoLongerTeaching()
    seat = None
    if seat_id is not None:
        seat = Seat.objects.filter(klass=klass, pk=seat_id).first()
        if seat is None:
            raise BadFrame("No such seat in this class.")
    message = messages.send_message(klass, user, text, seat)
    return {"id": message.pk, "seat": seat_id, "text": message.text, "at": message.sent_at.isoformat()}


class ClassLiveConsumer(LimitedConsumer[LabClass]):
    kind = "classlive"

    async def load(self, user: Any) -> LabClass | None:
        class_id = int(self.scope["url_route"]["kwargs"]["class_id"])
        self.session_id = f"class {class_id}"  # what the shared log lines name
        return await _class_for(user, class_id)

    async def connect(self) -> None:
        klass = await self.admit()
        if klass is None:
            return
        self.klass = klass
        self.refreshed = time.monotonic()
        await self.join(live.class_group(klass.pk))
        await self._send_grid()

    async def _send_grid(self) -> None:
        try:
            grid = await _grid(self.scope["user"], self.klass.pk)
        except NoLongerTeaching:
            self._revoked()
            return
        self.push_json({"type": "grid", **grid})

    def _revoked(self) -> None:
        log.info("class %s: user %s no longer teaches it, closing their grid", self.klass.pk, self.user_id)
        self.close_after(CLOSE_FORBIDDEN, "no longer a teacher of this class")

    async def handle(self, text_data: str | None, bytes_data: bytes | None) -> None:
        if bytes_data is not None:
            raise BadFrame("This socket takes JSON text frames only.")
        message = parse_control(text_data or "")
        kind = message["type"]
        if kind == "refresh":
            if time.monotonic() - self.refreshed < REFRESH_EVERY_S:
                self.tell("notice", "refresh_rate", f"The grid was sent less than {REFRESH_EVERY_S:g} s ago.")
                return
            self.refreshed = time.monotonic()
            await self._send_grid()
        elif kind == "message":
            text, seat = message.get("text"), message.get("seat")
            if not isinstance(text, str):
                raise BadFrame('"message" needs a string "text".')
            if seat is not None and type(seat) is not int:
                raise BadFrame('"seat" is a seat id (a whole number), or null for the whole class.')
            try:
                sent = await _send(self.scope["user"], self.klass.pk, text, seat)
            except NoLongerTeaching:
                self._revoked()
                return
            except LabError as exc:
                self.tell("error", "message_refused", exc.message)
                return
            self.push_json({"type": "sent", "message": sent})
        else:
            raise BadFrame(f"Unknown message type {kind[:40]!r}: use refresh or message.")

    async def class_seat(self, event: dict[str, Any]) -> None:
        self.push_json({"type": "seat", "row": event["row"]})

    async def class_seat_gone(self, event: dict[str, Any]) -> None:
        self.push_json({"type": "seat_gone", "seat": event["seat"]})
