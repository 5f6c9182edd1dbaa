"""The record's format: asciicast v2 (a JSON header line, then one `[t, code, data]` line per event).

Codes: "o" console output, "i" the learner's input, "r" a resize ("<cols>x<rows>"), "m" a marker
whose data is a JSON object: {"kind": "state"|"step"|"check"|"checkpoint"|"revert"|"cut"|"resumed",
…}. Standard players show a marker's data as its label; the replay page reads the object.
Django-free: the host's recorder, the API and the benchmark share it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

VERSION = 2
CODES = frozenset({"o", "i", "r", "m"})
MARK_KINDS = frozenset({"state", "step", "check", "checkpoint", "revert", "cut", "resumed"})


@dataclass(frozen=True)
class Event:
    t: float
    code: str
    data: str

    @property
    def mark(self) -> dict[str, Any] | None:
        """A marker's object (None for other events, or a marker that is not one of ours)."""
        if self.code != "m":
            return None
        try:
            value = json.loads(self.data)
        except ValueError:
            return None
        return value if isinstance(value, dict) and value.get("kind") in MARK_KINDS else None


def header_line(started: float, width: int = 80, height: int = 24, title: str = "") -> str:
    """The header: `timestamp` is whole seconds (the format's), `x_started` the exact start, so that
    markers stamped by other processes line up to the millisecond."""
    header: dict[str, Any] = {"version": VERSION, "width": width, "height": height, "timestamp": int(started),
                              "x_started": round(started, 6)}  # fmt: skip
    if title:
        header["title"] = title
    return json.dumps(header, ensure_ascii=False) + "\n"


def started_at(header: dict[str, Any]) -> float:
    exact = header.get("x_started")
    return float(exact) if isinstance(exact, int | float) else float(header.get("timestamp", 0))


def event_line(t: float, code: str, data: str) -> str:
    return json.dumps([round(t, 6), code, data], ensure_ascii=False) + "\n"


def mark_data(kind: str, **fields: Any) -> str:
    return json.dumps({"kind": kind, **fields}, ensure_ascii=False, separators=(",", ":"))


class CastError(ValueError):
    """Not an asciicast v2 record."""


def parse_header(line: str) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except ValueError as exc:
        raise CastError("the first line is not JSON") from exc
    if not isinstance(header, dict) or header.get("version") != VERSION:
        raise CastError("not an asciicast v2 header")
    return header


def parse(text: str) -> tuple[dict[str, Any], list[Event]]:
    """The header and the events of a record; a line that is not a well-formed event (a write cut
    short by a killed process) is skipped rather than failing the whole replay."""
    lines = text.split("\n")
    header = parse_header(lines[0])
    events = []
    for line in lines[1:]:
        if not line.startswith("["):
            continue
        try:
            t, code, data = json.loads(line)
        except ValueError:
            continue
        if isinstance(t, int | float) and code in CODES and isinstance(data, str):
            events.append(Event(float(t), code, data))
    return header, events
