"""/api/timelines and /api/sessions/{id}/timeline: the records a user may replay, and one record's
events as JSON (mounted on labs.api's NinjaAPI)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from ninja import Field, Query, Router, Schema

from labs.models import LabSession
from labs.schemas import DetailOut, IsoDatetime, ValidationErrorOut
from labs.timeline import cast
from labs.timeline.access import replayable_by, timeline_for
from labs.timeline.models import SessionTimeline
from labs.types import AuthenticatedRequest

router = Router(tags=["timelines"])
MAX_EVENTS = 5000


class TimelineOut(Schema):
    session: str
    lab: str
    learner: str
    started_at: IsoDatetime
    duration_s: float
    raw_bytes: int
    cut: bool


class MarkOut(Schema):
    """A marker: what happened (state, step, check, checkpoint, revert, cut, resumed) and its facts."""

    kind: str
    state: str | None = None
    step: int | None = None
    ok: bool | None = None
    reason_en: str | None = None
    reason_zh: str | None = None


class EventOut(Schema):
    t: float = Field(description="Seconds since the session's record began")
    code: str = Field(description='"o" output, "i" input, "r" resize, "m" marker')
    data: str
    mark: MarkOut | None = None


class TimelineEventsOut(TimelineOut):
    total: int = Field(description="Events that match the filter, over all pages")
    events: list[EventOut]


class EventsQuery(Schema):
    marks_only: bool = False
    offset: int = Field(0, ge=0)
    limit: int = Field(1000, ge=1, le=MAX_EVENTS)


def _summary(record: SessionTimeline) -> dict[str, Any]:
    session = record.session
    return {
        "session": session.pk, "lab": session.lab_slug, "learner": session.user.get_username(),
        "started_at": session.created_at, "duration_s": record.duration_s, "raw_bytes": record.raw_bytes,
        "cut": record.cut,
    }  # fmt: skip


def _mark_out(event: cast.Event) -> dict[str, Any] | None:
    mark = event.mark
    if mark is None:
        return None
    reason = mark.get("reason")
    if not isinstance(reason, dict):
        reason = {}
    return {
        "kind": mark["kind"], "state": mark.get("state"), "step": mark.get("step"), "ok": mark.get("ok"),
        "reason_en": reason.get("en"), "reason_zh": reason.get("zh"),
    }  # fmt: skip


def replayable_records(request: AuthenticatedRequest) -> QuerySet[SessionTimeline]:
    sessions = LabSession.objects.filter(replayable_by(request.user)).values("pk")
    return SessionTimeline.objects.filter(session__in=sessions).select_related("session__user").defer("cast_gz")


@router.get("/timelines", response={200: list[TimelineOut], 401: DetailOut})
def list_timelines(request: AuthenticatedRequest) -> list[dict[str, Any]]:
    """The stored records the caller may replay, newest first (at most 200)."""
    return [_summary(r) for r in replayable_records(request).order_by("-created_at")[:200]]


@router.get(
    "/sessions/{session_id}/timeline",
    response={200: TimelineEventsOut, 401: DetailOut, 404: DetailOut, 422: ValidationErrorOut},
)
def get_timeline(request: AuthenticatedRequest, session_id: str, query: Query[EventsQuery]) -> dict[str, Any]:
    """One record's events in order, a page at a time (`marks_only` for the steps, checks and reverts)."""
    record = timeline_for(request.user, session_id)
    _header, events = cast.parse(record.text())
    if query.marks_only:
        events = [e for e in events if e.mark is not None]
    page = events[query.offset : query.offset + query.limit]
    return {
        **_summary(record), "total": len(events),
        "events": [{"t": e.t, "code": e.code, "data": e.data, "mark": _mark_out(e)} for e in page],
    }  # fmt: skip
