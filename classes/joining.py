"""A learner joining a class with its invite code, and their seat's lab session.

Joining gives a seat and nothing more: no role, no view of other seats. A class with every seat
taken puts the learner in line (`waiting`, position computed from the rows) and `promote_waiting`
seats them as seats are added. The seat's session is the learner's session of the class's
current lab, started with the class's reservation key, so it takes a VM prepared for the class.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import formats, timezone
from django.utils.translation import gettext as _

from classes.access import teaches
from classes.errors import ClassStateError, InviteInvalid
from classes.live import seat_changed
from classes.models import CODE_ALPHABET, CODE_LENGTH, Invite, LabClass, Seat
from classes.provisioning import ACTIVE, sync_reservations
from labs.models import LabSession
from labs.services import start_lab
from labs.services.errors import LabError
from labs.states import RUNNING

log = logging.getLogger(__name__)


def normalize_code(code: str) -> str:
    """Codes are read off a projector: case, spaces and dashes do not matter."""
    return "".join(ch for ch in code.upper() if ch.isalnum())[: CODE_LENGTH + 6]


def find_invite(code: str) -> Invite:
    """The live invite with `code`: not revoked, not expired, of a class not ended; else InviteInvalid."""
    code = normalize_code(code)
    if len(code) != CODE_LENGTH or any(ch not in CODE_ALPHABET for ch in code):
        raise InviteInvalid()
    invite = Invite.objects.select_related("klass").filter(code=code, revoked_at=None).first()
    now = timezone.now()
    if invite is None or (invite.expires_at is not None and invite.expires_at <= now):
        raise InviteInvalid()
    if invite.klass.state == LabClass.State.ENDED:
        raise ClassStateError(_("This class has ended."))
    return invite


def waiting_position(seat: Seat) -> int | None:
    """1-based place in line for a seat, or None when the learner has one."""
    if not seat.waiting:
        return None
    ahead = Seat.objects.in_line().filter(klass_id=seat.klass_id, joined_at__lt=seat.joined_at).count()
    return ahead + 1


def join(user: User, code: str) -> Seat:
    """`user`'s seat in the invite's class (the one they hold already, if any)."""
    invite = find_invite(code)
    if teaches(user, invite.klass_id):
        raise ClassStateError(_("You teach this class: learners join it with this code, you manage it on its page."))
    with transaction.atomic():
        klass = LabClass.objects.select_for_update().get(pk=invite.klass_id)  # one seat count at a time
        seat = Seat.objects.filter(klass=klass, user=user).first()
        if seat is not None and seat.left_at is None:
            return seat
        if seat is not None and not seat.left_by_learner:
            raise ClassStateError(_("Your instructor removed you from this class."))
        if not klass.joining_open:
            raise ClassStateError(_("Joining this class is closed. Ask your instructor to open it."))
        full = klass.seat_set.seated().count() >= klass.seats
        if full and klass.seat_set.in_line().count() >= settings.CLASSES_MAX_WAITING:
            raise ClassStateError(
                _("This class is full (%(seats)d seats) and its waiting line too. Ask your instructor for a seat.")
                % {"seats": klass.seats}
            )
        if seat is None:
            seat = Seat.objects.create(klass=klass, user=user, waiting=full)
        else:  # they left and come back: the same seat (its results stay), at the back of the line if full
            Seat.objects.filter(pk=seat.pk).update(left_at=None, left_by_learner=False, waiting=full,
                                                   joined_at=timezone.now())  # fmt: skip
            seat.refresh_from_db()
        seat_changed(seat.pk)
        return seat


def start_seat_session(seat: Seat) -> LabSession:
    """The seat's running session, or a new one of the class's current lab from its reservation
    (a seat whose session ended or failed gets a fresh one, prepared from the same state)."""
    klass = LabClass.objects.get(pk=seat.klass_id)
    seat.refresh_from_db()
    if seat.left_at is not None:
        if seat.left_by_learner:
            raise ClassStateError(_("You left this class. Join it again with its invite code."))
        raise ClassStateError(_("Your instructor removed you from this class."))
    if seat.waiting:
        raise ClassStateError(
            _("This class is full: you are number %(position)d in line for a seat.")
            % {"position": waiting_position(seat)}
        )
    if klass.state not in ACTIVE:
        if klass.state == LabClass.State.ENDED:
            raise ClassStateError(_("This class has ended."))
        opens = klass.starts_at - timedelta(minutes=klass.lead_minutes)
        raise ClassStateError(
            _("Your seat is being kept for you. It opens at %(time)s.")
            % {"time": formats.date_format(timezone.localtime(opens), "DATETIME_FORMAT")}
        )
    session = LabSession.objects.filter(pk=seat.session_id, state__in=RUNNING).first() if seat.session_id else None
    if session is not None:
        return session
    session = start_lab(seat.user, klass.lab_slug, reservation_key=klass.reservation_key())
    with transaction.atomic():
        Seat.objects.filter(pk=seat.pk).update(session=session)
        seat.session = session
        seat.sessions.add(session)
        sync_reservations(klass)
        seat_changed(seat.pk)
    return session


def promote_waiting(klass: LabClass) -> list[Seat]:
    """Seat learners in line, first come first served, while the class has free seats; their
    sessions start at once when the class is under way."""
    with transaction.atomic():
        klass = LabClass.objects.select_for_update().get(pk=klass.pk)
        free = klass.seats - klass.seat_set.seated().count()
        promoted = list(klass.seat_set.in_line()[: max(0, free)])
        Seat.objects.filter(pk__in=[s.pk for s in promoted]).update(waiting=False)
        for seat in promoted:
            seat_changed(seat.pk)
    if klass.state in ACTIVE:
        for seat in promoted:
            try:
                start_seat_session(seat)
            except LabError as exc:  # the learner starts it from the class page, where the reason shows
                log.info("class %s: seat %s promoted, session not started: %s", klass.pk, seat.pk, exc.message)
    return promoted
