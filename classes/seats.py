"""Seat actions an instructor takes on one seat or many: reset to step N, extend, destroy and
re-provision, remove; and a learner leaving on their own, which is a removal they may undo by
joining again. Each is logged in the class's ClassAction log (who, when, what, which seats).

The instructor acts with the labs services directly (goto_step, stop_lab, …): these take a
session, and the authority check is here (the caller teaches the class; the seat is of it). A
seat an action cannot apply to now (no ready session, no such checkpoint) is skipped and named.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from classes.actionlog import log_action
from classes.errors import ClassError, ClassStateError
from classes.joining import promote_waiting, start_seat_session
from classes.live import seat_changed
from classes.models import LabClass, Seat
from labs.models import LabSession
from labs.services import goto_step, limits, stop_lab
from labs.services.catalog import require_lab
from labs.services.errors import LabError
from labs.services.transitions import update_fields
from labs.states import RUNNING, SessionState


class SeatAction(StrEnum):
    RESET = "reset"  # to step N (the checkpoint taken when it began)
    EXTEND = "extend"  # the session's expiry, by LABS_EXTEND_S
    REPROVISION = "reprovision"  # destroy the VM, start afresh from the class's prepared state
    REMOVE = "remove"  # the learner leaves the class: VM destroyed, seat freed for the next in line


@dataclass
class SeatActionReport:
    action: SeatAction
    done: list[int] = field(default_factory=list)
    skipped: dict[int, str] = field(default_factory=dict)  # seat id -> why


def class_seats_by_id(klass: LabClass, seat_ids: Iterable[int]) -> list[Seat]:
    """The seats named, all of them of `klass`; a seat of another class is refused like a missing one."""
    wanted = sorted(set(seat_ids))
    if not wanted:
        raise ClassError(_("Choose at least one seat."))
    seats = list(klass.seat_set.present().filter(pk__in=wanted).select_related("user"))
    if len(seats) != len(wanted):
        missing = sorted(set(wanted) - {s.pk for s in seats})
        raise ClassError(_("This class has no seat %(ids)s.") % {"ids": ", ".join(map(str, missing))})
    return seats


def _ready_session(seat: Seat) -> LabSession:
    session = LabSession.objects.filter(pk=seat.session_id).first() if seat.session_id else None
    if session is None or session.state != SessionState.READY:
        raise ClassStateError(_("no ready lab session"))
    return session


def _reset(seat: Seat, step: int) -> None:
    session = _ready_session(seat)
    goto_step(session, step)


def _extend(seat: Seat) -> None:
    session = _ready_session(seat)
    now = timezone.now()
    new_expiry = max(session.expires_at or now, now) + limits.extend_step()
    with transaction.atomic():
        update_fields(session.pk, expected=[SessionState.READY], expires_at=new_expiry, last_activity=now)


def _reprovision(seat: Seat) -> None:
    session = LabSession.objects.filter(pk=seat.session_id).first() if seat.session_id else None
    if session is not None and session.state in RUNNING:
        stop_lab(session)
    start_seat_session(seat)


def _remove(seat: Seat, by_learner: bool = False) -> None:
    """The seat leaves the class: its VM goes, its results stay (the export reads every session)."""
    session = LabSession.objects.filter(pk=seat.session_id).first() if seat.session_id else None
    if session is not None and session.state in RUNNING:
        stop_lab(session)
    Seat.objects.filter(pk=seat.pk).update(left_at=timezone.now(), waiting=False, left_by_learner=by_learner)
    seat_changed(seat.pk)


def act_on_seats(
    actor: User, klass: LabClass, seat_ids: Iterable[int], action: SeatAction | str, step: int | None = None
) -> SeatActionReport:
    """Apply `action` to each seat named (the caller teaches `klass`), and log it."""
    action = SeatAction(action)
    if klass.state == LabClass.State.ENDED:
        raise ClassStateError(_("This class has ended: its seats are gone."))
    seats = class_seats_by_id(klass, seat_ids)
    if action == SeatAction.RESET:
        steps = len(require_lab(klass.lab_slug).steps)
        if step is None or not 1 <= step <= steps:
            raise ClassError(_("Choose a step from 1 to %(steps)d.") % {"steps": steps})
    report = SeatActionReport(action)
    for seat in seats:
        try:
            if action == SeatAction.RESET:
                assert step is not None
                _reset(seat, step)
            elif action == SeatAction.EXTEND:
                _extend(seat)
            elif action == SeatAction.REMOVE:
                _remove(seat)
            else:
                _reprovision(seat)
        except LabError as exc:
            report.skipped[seat.pk] = exc.message
        else:
            report.done.append(seat.pk)
    detail: dict[str, object] = {"done": report.done, "skipped": {str(k): v for k, v in report.skipped.items()}}
    if step is not None and action == SeatAction.RESET:
        detail["step"] = step
    log_action(actor, klass, action, seats, detail)
    if action == SeatAction.REMOVE and report.done:
        promote_waiting(klass)
    return report


def leave_class(seat: Seat) -> None:
    """The learner leaves their seat (or place in line) themselves: removed as an instructor
    removes them, the next in line seated, but they may join again with the invite code."""
    klass = LabClass.objects.get(pk=seat.klass_id)
    if klass.state == LabClass.State.ENDED:
        raise ClassStateError(_("This class has ended: its seats are gone."))
    seat.refresh_from_db()
    if seat.left_at is not None:
        raise ClassStateError(_("You are no longer in this class."))
    _remove(seat, by_learner=True)
    log_action(seat.user, klass, "leave", [seat], {"waiting": seat.waiting})
    promote_waiting(klass)
