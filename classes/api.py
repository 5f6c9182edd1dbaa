"""/api/classes/…: the class operations of the pages, for scripts (django-ninja, in the OpenAPI
document at /api/docs). Mounted on labs' NinjaAPI by classes/apps.py; its LabError handler turns
the services' refusals (ClassError is one) into {"detail": …} with their status.

An instructor and the class's co-instructors reach a class's endpoints (adding and removing
co-instructors is the owner's: 403 for a co-instructor); a learner reaches only their own seat
(`/seat`); for anyone else a class does not exist (404). Every state-changing operation counts
against the caller's CLASSES_ACTION_RATE (429 past it), as on the pages.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from ninja import Field, Router, Schema, Status
from pydantic import StrictInt

from classes import export, lifecycle
from classes.access import class_taught_by, taught_by
from classes.errors import ClassNotFound
from classes.joining import join, start_seat_session, waiting_position
from classes.models import Invite, LabClass, Seat
from classes.progress import Reason, class_progress
from classes.provisioning import readiness
from classes.seats import act_on_seats, leave_class
from classes.throttles import check_action_rate, join_limit_hit
from labs.schemas import DetailOut, IsoDatetime, ValidationErrorOut
from labs.services.errors import RateLimited
from labs.types import AuthenticatedRequest

router = Router(tags=["classes"])
MAX_ID = 2**31 - 1  # a class or seat id beyond any the database holds is simply not found
ClassId = Annotated[int, Field(ge=1, le=MAX_ID)]
Minutes = Annotated[StrictInt, Field(ge=0, le=240)]

# 401 (not logged in) comes from django_auth; 404: a class the caller does not teach (or none);
# 422: a path or body that does not match the schema (an id past MAX_ID, say).
SEE: dict[int, type[Schema]] = {401: DetailOut, 404: DetailOut, 422: ValidationErrorOut}
# A POST: 403 without the CSRF token (or not an instructor, or not the class's owner); 400 refused
# input (or a body that is not JSON); 409 the class's state forbids it, or the hosts have no room;
# 429 too many actions in the window (CLASSES_ACTION_RATE).
ACT: dict[int, type[Schema]] = {**SEE, 400: DetailOut, 403: DetailOut, 409: DetailOut, 429: DetailOut}


class InviteOut(Schema):
    code: str
    link: str
    expires_at: IsoDatetime | None


class ClassOut(Schema):
    id: int
    title: str
    labs: list[str]
    lab: str  # the lab the seats run now
    state: str
    starts_at: IsoDatetime
    ends_at: IsoDatetime
    ended_at: IsoDatetime | None
    seats: int
    grace_minutes: int
    lead_minutes: int
    joining_open: bool
    seats_ready: int  # "seats ready 18/30": prepared VMs waiting plus seats whose lab is ready
    seats_preparing: int
    learners: int
    waiting: int
    hosts: dict[str, int]
    invites: list[InviteOut]


class ClassIn(Schema):
    title: str = Field(max_length=120)
    labs: list[Annotated[str, Field(max_length=80)]] = Field(min_length=1, max_length=10)
    starts_at: datetime
    ends_at: datetime
    seats: Annotated[StrictInt, Field(ge=1, le=100_000)]
    grace_minutes: Minutes = 15
    lead_minutes: Minutes = 10


class ClassActionIn(Schema):
    action: Literal["open_joining", "close_joining", "add_seats", "provision", "next_lab", "end"]
    count: Annotated[StrictInt, Field(ge=1, le=1000)] | None = None


class SeatActionIn(Schema):
    action: Literal["reset", "extend", "reprovision", "remove"]
    seats: list[Annotated[StrictInt, Field(ge=1, le=MAX_ID)]] = Field(min_length=1, max_length=1000)
    step: Annotated[StrictInt, Field(ge=1, le=1000)] | None = None


class SeatActionOut(Schema):
    done: list[int]
    skipped: dict[str, str]  # seat id -> why it was skipped


class InviteIn(Schema):
    expires_in_hours: Annotated[StrictInt, Field(ge=1, le=24 * 90)] | None = None


class CoInstructorIn(Schema):
    name: str = Field(min_length=1, max_length=254, description="username or e-mail address")


class CoInstructorOut(Schema):
    id: int
    username: str


class JoinIn(Schema):
    code: str = Field(max_length=32)


class SeatOut(Schema):
    """A learner's own seat."""

    class_id: int
    title: str
    class_state: str
    waiting: bool
    position: int | None  # in line for a seat
    session: str | None  # their lab session (GET /api/sessions/{id})
    lab: str
    left: bool  # they left (they may join again with the code) or were removed


class ReasonOut(Schema):
    en: str
    zh: str


class CellOut(Schema):
    step: int
    state: Literal["not_started", "working", "passed", "failed"]
    attempts: int
    time_s: float | None
    reason: ReasonOut | None


class SeatProgressOut(Schema):
    seat: int
    learner: str
    waiting: bool
    session: str | None
    session_state: str
    current_step: int
    cells: list[CellOut]


class ReasonGroupOut(Schema):
    step: int
    reason: ReasonOut
    seats: list[int]


class ProgressOut(Schema):
    lab: str
    steps: int
    seats: list[SeatProgressOut]
    stuck: list[ReasonGroupOut]  # per step, learners failing for one reason, the largest group first


class ExportRowOut(Schema):
    learner: str
    seat: int
    waiting: bool
    lab: str
    step: int
    state: str
    attempts: int
    time_s: float | None
    failure_reason_en: str
    failure_reason_zh: str


class ExportOut(Schema):
    rows: list[ExportRowOut]


def spec_of(body: ClassIn) -> lifecycle.ClassSpec:
    return lifecycle.ClassSpec(
        title=body.title, labs=body.labs, starts_at=body.starts_at, ends_at=body.ends_at, seats=body.seats,
        grace_minutes=body.grace_minutes, lead_minutes=body.lead_minutes,
    )  # fmt: skip


def _class(request: AuthenticatedRequest, class_id: int) -> LabClass:
    klass = class_taught_by(request.user, class_id)
    if klass is None:
        raise ClassNotFound()
    return klass


def _invite_out(request: HttpRequest, invite: Invite) -> InviteOut:
    link = request.build_absolute_uri(reverse("classes:join", args=[invite.code]))
    return InviteOut(code=invite.code, link=link, expires_at=invite.expires_at)


def class_out(request: HttpRequest, klass: LabClass) -> ClassOut:
    ready = readiness(klass)
    live = klass.invites.filter(revoked_at=None).exclude(expires_at__lte=timezone.now()).order_by("-created_at")
    return ClassOut(
        id=klass.pk, title=klass.title, labs=list(klass.labs), lab=klass.lab_slug, state=klass.state,
        starts_at=klass.starts_at, ends_at=klass.ends_at, ended_at=klass.ended_at, seats=klass.seats,
        grace_minutes=klass.grace_minutes, lead_minutes=klass.lead_minutes, joining_open=klass.joining_open,
        seats_ready=ready.ready, seats_preparing=ready.preparing,
        learners=klass.seat_set.seated().count(), waiting=klass.seat_set.in_line().count(),
        hosts={str(k): int(v) for k, v in klass.host_shares.items()},
        invites=[_invite_out(request, invite) for invite in live],
    )  # fmt: skip


def seat_out(seat: Seat) -> SeatOut:
    klass = seat.klass
    return SeatOut(
        class_id=klass.pk, title=klass.title, class_state=klass.state, waiting=seat.waiting,
        position=waiting_position(seat), session=seat.session_id, lab=klass.lab_slug, left=seat.left_at is not None,
    )  # fmt: skip


@router.get("", response={200: list[ClassOut], 401: DetailOut})
def list_classes(request: AuthenticatedRequest) -> list[ClassOut]:
    """The classes the caller teaches (as instructor or co-instructor)."""
    return [class_out(request, klass) for klass in taught_by(request.user).order_by("-starts_at")[:200]]


@router.post("", response={201: ClassOut, **ACT})
def create_class(request: AuthenticatedRequest, body: ClassIn) -> Status[ClassOut]:
    """Create a class (instructors only; 409 with the shortfall when the hosts cannot hold its seats)."""
    check_action_rate(request)
    return Status(201, class_out(request, lifecycle.create_class(request.user, spec_of(body))))


# Before the /{class_id} routes: Django tries the URL patterns in order.
@router.post("/join", response={200: SeatOut, 429: DetailOut, **ACT})
def join_class(request: AuthenticatedRequest, body: JoinIn) -> SeatOut:
    """Join with an invite code: a seat (or a place in line), and its lab session when the class is under way."""
    limited = join_limit_hit(request)
    if limited is not None:
        raise RateLimited(str(limited[0].message))
    seat = join(request.user, body.code)
    if not seat.waiting and seat.klass.state in (LabClass.State.PROVISIONING, LabClass.State.OPEN):
        start_seat_session(seat)
        seat.refresh_from_db()
    return seat_out(seat)


@router.get("/{class_id}", response={200: ClassOut, **SEE})
def get_class(request: AuthenticatedRequest, class_id: ClassId) -> ClassOut:
    return class_out(request, _class(request, class_id))


@router.post("/{class_id}/edit", response={200: ClassOut, **ACT})
def edit_class(request: AuthenticatedRequest, class_id: ClassId, body: ClassIn) -> ClassOut:
    """New title, labs, times or seats (409 with the shortfall when the hosts cannot hold the seats)."""
    check_action_rate(request)
    klass = lifecycle.update_class(request.user, _class(request, class_id), spec_of(body))
    return class_out(request, klass)


@router.post("/{class_id}/actions", response={200: ClassOut, **ACT})
def class_action(request: AuthenticatedRequest, class_id: ClassId, body: ClassActionIn) -> ClassOut:
    """open_joining, close_joining, add_seats (with `count`; admission-checked), provision (now),
    next_lab (the seats move on to the class's next lab), end (now)."""
    check_action_rate(request)
    klass = lifecycle.class_action(request.user, _class(request, class_id), body.action, body.count)
    klass.refresh_from_db()
    return class_out(request, klass)


@router.get("/{class_id}/progress", response={200: ProgressOut, **SEE})
def progress(request: AuthenticatedRequest, class_id: ClassId) -> ProgressOut:
    data = class_progress(_class(request, class_id))

    def reason(r: Reason | None) -> ReasonOut | None:
        return ReasonOut(en=r.en, zh=r.zh) if r is not None else None

    return ProgressOut(
        lab=data.lab_slug, steps=data.steps,
        seats=[
            SeatProgressOut(
                seat=row.seat_id, learner=row.username, waiting=row.waiting, session=row.session_id,
                session_state=row.session_state, current_step=row.current_step,
                cells=[CellOut(step=c.step, state=c.state.value, attempts=c.attempts, time_s=c.time_s,
                               reason=reason(c.reason)) for c in row.cells],
            )
            for row in data.seats
        ],
        stuck=[
            ReasonGroupOut(step=g.step, reason=ReasonOut(en=g.reason.en, zh=g.reason.zh), seats=list(g.seat_ids))
            for groups in data.groups.values() for g in groups
        ],
    )  # fmt: skip


@router.post("/{class_id}/seats/actions", response={200: SeatActionOut, **ACT})
def seat_action(request: AuthenticatedRequest, class_id: ClassId, body: SeatActionIn) -> SeatActionOut:
    """reset (to `step`), extend, reprovision, remove (the learner leaves; the next in line is seated),
    on the seats named; seats it cannot apply to now are skipped."""
    check_action_rate(request)
    report = act_on_seats(request.user, _class(request, class_id), body.seats, body.action, body.step)
    return SeatActionOut(done=report.done, skipped={str(k): v for k, v in report.skipped.items()})


@router.get("/{class_id}/export", response={200: ExportOut, **SEE})
def export_rows(request: AuthenticatedRequest, class_id: ClassId) -> ExportOut:
    """Per learner, lab and step: state, attempts, time, failure reason (also after the class ended)."""
    return ExportOut(rows=[ExportRowOut(**row) for row in export.rows(_class(request, class_id))])


@router.post("/{class_id}/invites", response={201: InviteOut, **ACT})
def new_invite(request: AuthenticatedRequest, class_id: ClassId, body: InviteIn) -> Status[InviteOut]:
    check_action_rate(request)
    hours = body.expires_in_hours
    expires = timezone.now() + timedelta(hours=hours) if hours else None
    return Status(201, _invite_out(request, lifecycle.new_invite(request.user, _class(request, class_id), expires)))


@router.post("/{class_id}/invites/{code}/revoke", response={200: DetailOut, **ACT})
def revoke_invite(
    request: AuthenticatedRequest, class_id: ClassId, code: Annotated[str, Field(max_length=32)]
) -> DetailOut:
    check_action_rate(request)
    lifecycle.revoke_invite(request.user, _class(request, class_id), code)
    return DetailOut(detail="revoked")


@router.get("/{class_id}/seat", response={200: SeatOut, **SEE})
def my_seat(request: AuthenticatedRequest, class_id: ClassId) -> SeatOut:
    """The caller's own seat in the class."""
    seat = Seat.objects.select_related("klass").filter(klass_id=class_id, user=request.user).first()
    if seat is None:
        raise ClassNotFound()
    return seat_out(seat)


@router.post("/{class_id}/seat/open", response={200: SeatOut, 429: DetailOut, 503: DetailOut, **ACT})
def open_my_seat(request: AuthenticatedRequest, class_id: ClassId) -> SeatOut:
    """Start the caller's seat session (a fresh one if theirs ended or failed)."""
    check_action_rate(request)
    seat = Seat.objects.select_related("klass").filter(klass_id=class_id, user=request.user).first()
    if seat is None:
        raise ClassNotFound()
    start_seat_session(seat)
    seat.refresh_from_db()
    return seat_out(seat)


@router.post("/{class_id}/seat/leave", response={200: SeatOut, **ACT})
def leave_my_seat(request: AuthenticatedRequest, class_id: ClassId) -> SeatOut:
    """Leave the class (or its waiting line): the seat's VM is destroyed and the seat goes to the next
    in line; the results stay in the export, and the caller may join again with the invite code."""
    check_action_rate(request)
    seat = Seat.objects.select_related("klass").filter(klass_id=class_id, user=request.user).first()
    if seat is None:
        raise ClassNotFound()
    leave_class(seat)
    seat.refresh_from_db()
    return seat_out(seat)


def _co_instructors(klass: LabClass) -> list[CoInstructorOut]:
    return [CoInstructorOut(id=u.pk, username=u.get_username()) for u in klass.co_instructors.order_by("username")]


@router.get("/{class_id}/co-instructors", response={200: list[CoInstructorOut], **SEE})
def list_co_instructors(request: AuthenticatedRequest, class_id: ClassId) -> list[CoInstructorOut]:
    """The class's co-instructors (its owner is `GET /{class_id}`'s instructor)."""
    return _co_instructors(_class(request, class_id))


@router.post("/{class_id}/co-instructors", response={201: list[CoInstructorOut], **ACT})
def add_co_instructor(
    request: AuthenticatedRequest, class_id: ClassId, body: CoInstructorIn
) -> Status[list[CoInstructorOut]]:
    """Add a co-instructor by username or e-mail address (the class's owner only: 403 for a
    co-instructor); they see and act on this class as its instructor does. The list after."""
    check_action_rate(request)
    klass = _class(request, class_id)
    lifecycle.add_co_instructor(request.user, klass, body.name)
    return Status(201, _co_instructors(klass))


@router.post("/{class_id}/co-instructors/remove", response={200: list[CoInstructorOut], **ACT})
def remove_co_instructor(
    request: AuthenticatedRequest, class_id: ClassId, body: CoInstructorIn
) -> list[CoInstructorOut]:
    """Remove a co-instructor by username or e-mail address (the class's owner only). The list after."""
    check_action_rate(request)
    klass = _class(request, class_id)
    lifecycle.remove_co_instructor(request.user, klass, body.name)
    return _co_instructors(klass)
