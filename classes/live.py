"""The instructor's live grid: its data (steps x learners, from classes.progress) and its events.

The grid's websocket (classes/consumers.py) joins the class's group; a seat's row is pushed to it
whenever its session's state or results change. Labs never imports classes: session_events calls
`on_session_event` through settings.LABS_SESSION_LISTENERS, in whichever process made the change
(a host agent's check worker for a verdict), so a verdict reaches the grid in one channel-layer hop.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from classes.models import LabClass, Seat
from classes.progress import SeatProgress, class_progress, class_seats, lab_steps, seat_progress
from labs.catalog import Lab
from labs.models import LabSession
from labs.services.catalog import get_lab
from labs.services.session_events import send

log = logging.getLogger(__name__)


def class_group(class_id: int) -> str:
    """Channel-layer group of a class's live grid (its instructors' sockets)."""
    return f"class.{class_id}.live"


def row_json(row: SeatProgress, now: datetime) -> dict[str, Any]:
    """One learner's row as the grid's script reads it. `as_of` lets the page keep the time on a
    step that is still running ticking without asking again."""
    return {
        "seat": row.seat_id,
        "user": row.username,
        "waiting": row.waiting,
        "session": row.session_id,
        "session_state": row.session_state,
        "current_step": row.current_step,
        "as_of": now.isoformat(),
        "cells": [
            {
                "step": cell.step,
                "state": str(cell.state),
                "attempts": cell.attempts,
                "time_s": None if cell.time_s is None else round(cell.time_s, 1),
                "reason": None if cell.reason is None else {"en": cell.reason.en, "zh": cell.reason.zh},
            }
            for cell in row.cells
        ],
    }


def step_titles(lab: Lab | None) -> list[dict[str, str]]:
    if lab is None:
        return []
    return [{"en": step.title.en, "zh": step.title.zh} for step in lab.steps]


def grid_json(klass: LabClass) -> dict[str, Any]:
    """The whole grid: the class, its current lab's steps, and every seat's row."""
    now = timezone.now()
    progress = class_progress(klass, seats=class_seats(klass), now=now)
    lab = get_lab(progress.lab_slug)
    return {
        "class": {"id": klass.pk, "title": klass.title, "state": klass.state, "lab": progress.lab_slug},
        "steps": step_titles(lab),
        "rows": [row_json(row, now) for row in progress.seats],
    }


def push_seat(seat: Seat) -> None:
    """Send one seat's row to its class's grid (its session changed)."""
    klass = seat.klass
    now = timezone.now()
    row = seat_progress(seat, klass.lab_slug, lab_steps(klass.lab_slug), now)
    send(class_group(klass.pk), {"type": "class.seat", "row": row_json(row, now)})


def seat_changed(seat_id: int) -> None:
    """Once the transaction commits: the seat's row to its class's grid, or word that the seat is
    gone (a learner joined, was seated from the line, got a session, left or was removed)."""

    def push() -> None:
        seat = Seat.objects.select_related("klass", "user").filter(pk=seat_id).first()
        if seat is None:
            return
        if seat.left_at is not None:
            send(class_group(seat.klass_id), {"type": "class.seat_gone", "seat": seat.pk})
        else:
            push_seat(seat)

    transaction.on_commit(push)


def on_session_event(session: LabSession, payload: dict[str, Any]) -> None:
    """The LABS_SESSION_LISTENERS hook: a seat's session changed, so its row on the grid did."""
    seat = Seat.objects.select_related("klass", "user").filter(session_id=session.pk).first()
    if seat is None:
        return  # not a class's session (one indexed lookup per push)
    push_seat(seat)
