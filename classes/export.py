"""A class's results as CSV and JSON: one row per learner, lab and step (state, attempts, time on
the step, the latest failure reason in both languages). Computed by classes.progress from the rows
that stay after the class ends, so an export works during the class and after it."""

from __future__ import annotations

import csv
import io
from typing import Any

from django.utils import timezone

from classes.models import LabClass
from classes.progress import class_progress, class_seats

COLUMNS = (
    "learner", "seat", "waiting", "lab", "step", "state", "attempts", "time_s", "failure_reason_en",
    "failure_reason_zh",
)  # fmt: skip
# A cell a spreadsheet would run as a formula (CSV injection): prefixed with ' so it stays text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def rows(klass: LabClass) -> list[dict[str, Any]]:
    """Every learner on every step of every lab of the class, in seat then step order."""
    seats = class_seats(klass, removed=True)
    now = timezone.now()
    out: list[dict[str, Any]] = []
    for slug in klass.labs:
        progress = class_progress(klass, slug, seats=seats, now=now)
        for seat in progress.seats:
            for cell in seat.cells:
                out.append({
                    "learner": seat.username, "seat": seat.seat_id, "waiting": seat.waiting, "lab": slug,
                    "step": cell.step, "state": str(cell.state), "attempts": cell.attempts,
                    "time_s": None if cell.time_s is None else round(cell.time_s, 1),
                    "failure_reason_en": cell.reason.en if cell.reason else "",
                    "failure_reason_zh": cell.reason.zh if cell.reason else "",
                })  # fmt: skip
    return out


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def as_csv(klass: LabClass) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for row in rows(klass):
        writer.writerow([_cell(row[c]) for c in COLUMNS])
    return buffer.getvalue()


def as_json(klass: LabClass) -> dict[str, Any]:
    return {
        "class": {
            "id": klass.pk, "title": klass.title, "labs": list(klass.labs), "state": klass.state,
            "starts_at": klass.starts_at.isoformat(), "ends_at": klass.ends_at.isoformat(),
            "ended_at": klass.ended_at.isoformat() if klass.ended_at else None,
        },
        "rows": rows(klass),
    }  # fmt: skip


def filename(klass: LabClass, ext: str) -> str:
    return f"class-{klass.pk}-results.{ext}"
