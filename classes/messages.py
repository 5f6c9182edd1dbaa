"""Messages and hints from a class's instructors to one learner or to the whole class.

A message is stored (ClassMessage) and logged (ClassAction "message"), then pushed to the learner's
lab page through their session's events group; the page replays the recent ones when it connects
(settings.LABS_SESSION_GREETERS), so a reload still shows them. Text only: the page sets it as
text, never as HTML. Bounded: CLASSES_MESSAGE_MAX_CHARS per message, CLASSES_MESSAGE_RATE per
sender per minute.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from classes.models import ClassAction, ClassMessage, LabClass, Seat
from labs.models import LabSession
from labs.services.errors import LabError, RateLimited
from labs.services.session_events import push_message

RECENT = timedelta(hours=3)  # what a page that (re)connects replays
RECENT_COUNT = 5


class MessageRefused(LabError):
    status = 400


def _payload(message: ClassMessage) -> dict[str, Any]:
    sender = message.sender.get_username() if message.sender is not None else ""
    return {
        "id": message.pk,
        "text": message.text,
        "sender": sender,
        "to_class": message.seat_id is None,
        "at": message.sent_at.isoformat(),
    }


def _hit_rate(sender_id: int) -> bool:
    """Count a message; True when the sender is over the limit (a fixed minute in the Redis cache)."""
    key = f"virtlab:classes:msg-rate:{sender_id}"
    cache.add(key, 0, timeout=60)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=60)
        count = 1
    return int(count) > settings.CLASSES_MESSAGE_RATE


def send_message(klass: LabClass, sender: User, text: str, seat: Seat | None = None) -> ClassMessage:
    """Store, log and deliver a message to `seat`'s learner, or to every seated learner of `klass`.

    The caller has checked that `sender` teaches `klass` (and that `seat` is one of its seats)."""
    text = text.strip()
    limit = settings.CLASSES_MESSAGE_MAX_CHARS
    if not text:
        raise MessageRefused(_("A message needs some text."))
    if len(text) > limit:
        raise MessageRefused(
            _("A message has at most %(limit)d characters (this one has %(n)d).") % {"limit": limit, "n": len(text)}
        )
    if seat is not None and seat.klass_id != klass.pk:
        raise MessageRefused(_("That seat is not in this class."))
    if _hit_rate(int(sender.pk)):
        raise RateLimited(
            _("Too many messages: at most %(rate)d a minute. Wait a moment.") % {"rate": settings.CLASSES_MESSAGE_RATE}
        )
    with transaction.atomic():
        message = ClassMessage.objects.create(klass=klass, sender=sender, seat=seat, text=text)
        action = ClassAction.objects.create(
            klass=klass, actor=sender, action="message", detail={"message": message.pk, "to_class": seat is None}
        )
        if seat is not None:
            action.seats.add(seat)
    payload = _payload(message)
    targets = [seat] if seat is not None else klass.seat_set.exclude(session=None)
    for target in targets:
        if target.session_id is not None:
            push_message(target.session_id, payload)
    return message


def recent_messages(session: LabSession) -> list[dict[str, Any]]:
    """The LABS_SESSION_GREETERS hook: the recent messages to this session's seat and its class."""
    seat = Seat.objects.filter(Q(session=session) | Q(sessions=session)).order_by("-pk").first()
    if seat is None:
        return []
    recent = (
        ClassMessage.objects.filter(klass_id=seat.klass_id, sent_at__gte=timezone.now() - RECENT)
        .filter(Q(seat=seat) | Q(seat=None))
        .select_related("sender")
        .order_by("-sent_at", "-pk")[:RECENT_COUNT]
    )
    return [{"type": "message", "message": _payload(m)} for m in reversed(recent)]
