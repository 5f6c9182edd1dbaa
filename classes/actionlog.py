"""The class's log: every instructor action, who took it, when, on which seats, with what result."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import User

from classes.models import ClassAction, LabClass, Seat


def log_action(
    actor: User | None, klass: LabClass, action: str, seats: Iterable[Seat] = (), detail: dict[str, Any] | None = None
) -> ClassAction:
    """Record `action` (actor None: the system, e.g. the end at ends_at + grace)."""
    entry = ClassAction.objects.create(klass=klass, actor=actor, action=str(action), detail=detail or {})
    seats = list(seats)
    if seats:
        entry.seats.set(seats)
    return entry
