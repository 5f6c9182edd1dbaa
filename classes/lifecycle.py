"""A class's life: created (admission-checked), edited, prepared ahead (provisioning), opened at
its start, ended at its end plus grace or when an instructor ends it; and the class actions in
between (joining open or closed, seats added, invites, co-instructors). Each action is logged."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from classes.actionlog import log_action
from classes.admission import admit, admit_class, window
from classes.errors import ClassError, ClassStateError, NotInstructor, NotOwner
from classes.joining import promote_waiting
from classes.models import Invite, LabClass
from classes.provisioning import ACTIVE, prepare_templates, provision, release, sync_reservations
from labs.models import LabSession
from labs.services import end_session
from labs.services.catalog import get_lab, require_lab
from labs.services.transitions import update_fields
from labs.states import RUNNING, SessionState
from portal.roles import INSTRUCTOR, has_role

log = logging.getLogger(__name__)


@dataclass
class ClassSpec:
    """What an instructor sets: checked by `validate` (forms and the API build one)."""

    title: str
    labs: list[str]
    starts_at: datetime
    ends_at: datetime
    seats: int
    grace_minutes: int = 15
    lead_minutes: int = 10
    errors: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        """ClassError naming the first wrong field (all of them in `errors`)."""
        err = self.errors
        self.title = self.title.strip()
        if not self.title or len(self.title) > 120:
            err["title"] = _("Give the class a title of 1 to 120 characters.")
        if not self.labs or len(self.labs) > settings.CLASSES_MAX_LABS:
            err["labs"] = _("Choose 1 to %(n)d labs.") % {"n": settings.CLASSES_MAX_LABS}
        elif len(set(self.labs)) != len(self.labs):
            err["labs"] = _("Each lab can be in the class once.")
        else:
            unknown = [slug for slug in self.labs if get_lab(slug) is None]
            if unknown:
                err["labs"] = _("There is no lab called “%(slug)s”.") % {"slug": unknown[0]}
        if not 1 <= self.seats <= settings.CLASSES_MAX_SEATS:
            err["seats"] = _("A class has 1 to %(n)d seats.") % {"n": settings.CLASSES_MAX_SEATS}
        if self.ends_at <= self.starts_at:
            err["ends_at"] = _("The class must end after it starts.")
        elif self.ends_at - self.starts_at > timedelta(hours=settings.CLASSES_MAX_HOURS):
            err["ends_at"] = _("A class lasts at most %(n)d hours.") % {"n": settings.CLASSES_MAX_HOURS}
        if not 0 <= self.grace_minutes <= 240:
            err["grace_minutes"] = _("The grace period is 0 to 240 minutes.")
        if not 0 <= self.lead_minutes <= 240:
            err["lead_minutes"] = _("The preparation lead time is 0 to 240 minutes.")
        if err:
            raise ClassError(next(iter(err.values())))


def create_class(owner: User, spec: ClassSpec) -> LabClass:
    """A new class with one invite, if the hosts have room for its seats (NoCapacity otherwise)."""
    if not has_role(owner, INSTRUCTOR):
        raise NotInstructor()
    spec.validate()
    if spec.ends_at + timedelta(minutes=spec.grace_minutes) <= timezone.now():
        raise ClassError(_("This class would be over already: choose an end in the future."))
    profile = require_lab(spec.labs[0]).profile
    start, end = (
        spec.starts_at - timedelta(minutes=spec.lead_minutes),
        spec.ends_at + timedelta(minutes=spec.grace_minutes),
    )
    shares = admit(profile, spec.seats, start, end)
    with transaction.atomic():
        klass = LabClass.objects.create(
            title=spec.title, owner=owner, labs=spec.labs, seats=spec.seats, starts_at=spec.starts_at,
            ends_at=spec.ends_at, grace_minutes=spec.grace_minutes, lead_minutes=spec.lead_minutes,
            host_shares=shares,
        )  # fmt: skip
        Invite.objects.create(klass=klass, created_by=owner)
        log_action(owner, klass, "create", detail={"seats": spec.seats, "labs": spec.labs, "hosts": shares})
        prepare_templates(klass)
    return advance(klass)


def update_class(actor: User, klass: LabClass, spec: ClassSpec) -> LabClass:
    """New title, labs, times or seats; seats and times are admission-checked again."""
    if klass.state == LabClass.State.ENDED:
        raise ClassStateError(_("This class has ended."))
    spec.validate()
    taken = klass.seat_set.seated().count()
    if spec.seats < taken:
        raise ClassError(_("%(n)d learners hold seats: the class cannot have fewer.") % {"n": taken})
    if klass.state != LabClass.State.SCHEDULED and spec.labs[0:1] != klass.labs[0:1] and klass.current_lab == 0:
        raise ClassStateError(_("The seats are prepared for this lab already: it cannot change now."))
    with transaction.atomic():
        klass = LabClass.objects.select_for_update().get(pk=klass.pk)
        before = {f: getattr(klass, f) for f in ("title", "labs", "seats", "starts_at", "ends_at")}
        for name in ("title", "labs", "starts_at", "ends_at", "seats", "grace_minutes", "lead_minutes"):
            setattr(klass, name, getattr(spec, name))
        klass.current_lab = min(klass.current_lab, len(klass.labs) - 1)
        start, end = window(klass)
        keep = klass.host_shares if spec.seats >= before["seats"] else {}
        klass.host_shares = admit(require_lab(klass.lab_slug).profile, spec.seats, start, end, exclude=klass.pk,
                                  current=keep)  # fmt: skip
        klass.save()
        changed = {f: str(v) for f, v in before.items() if getattr(klass, f) != v}
        log_action(actor, klass, "edit", detail={"changed": changed})
        prepare_templates(klass)
        sync_reservations(klass)
    promote_waiting(klass)
    return advance(klass)


def set_joining(actor: User, klass: LabClass, open_: bool) -> None:
    LabClass.objects.filter(pk=klass.pk).update(joining_open=open_)
    klass.joining_open = open_
    log_action(actor, klass, "open_joining" if open_ else "close_joining")


def add_seats(actor: User, klass: LabClass, count: int) -> LabClass:
    """`count` more seats, if the hosts have room; learners in line take them first."""
    if klass.state == LabClass.State.ENDED:
        raise ClassStateError(_("This class has ended."))
    if count < 1 or klass.seats + count > settings.CLASSES_MAX_SEATS:
        raise ClassError(_("A class has 1 to %(n)d seats.") % {"n": settings.CLASSES_MAX_SEATS})
    with transaction.atomic():
        klass = LabClass.objects.select_for_update().get(pk=klass.pk)
        klass.host_shares = admit_class(klass, klass.seats + count)
        klass.seats += count
        klass.save(update_fields=["host_shares", "seats"])
        log_action(actor, klass, "add_seats", detail={"count": count, "seats": klass.seats})
        prepare_templates(klass)
        sync_reservations(klass)
    promote_waiting(klass)
    return klass


def new_invite(actor: User, klass: LabClass, expires_at: datetime | None = None) -> Invite:
    if klass.state == LabClass.State.ENDED:
        raise ClassStateError(_("This class has ended."))
    if expires_at is not None and expires_at <= timezone.now():
        raise ClassError(_("An invite's expiry must be in the future."))
    invite = Invite.objects.create(klass=klass, created_by=actor, expires_at=expires_at)
    log_action(actor, klass, "new_invite", detail={"code": invite.code})
    return invite


def revoke_invite(actor: User, klass: LabClass, code: str) -> None:
    if not klass.invites.filter(code=code, revoked_at=None).update(revoked_at=timezone.now()):
        raise ClassError(_("This class has no live invite %(code)s.") % {"code": code[:16]})
    log_action(actor, klass, "revoke_invite", detail={"code": code})


def find_user(name_or_email: str) -> User:
    text = name_or_email.strip()[:254]
    match = User.objects.filter(Q(username__iexact=text) | Q(email__iexact=text), is_active=True)
    users = list(match[:2])
    if len(users) != 1:
        raise ClassError(_("No single account is called or has the address “%(name)s”.") % {"name": text})
    return users[0]


def add_co_instructor(actor: User, klass: LabClass, name_or_email: str) -> User:
    """Only the class's owner adds co-instructors (they need not be instructors themselves)."""
    if klass.owner_id != actor.pk:
        raise NotOwner(_("Only the class's instructor can add co-instructors."))
    user = find_user(name_or_email)
    if user.pk == klass.owner_id:
        raise ClassError(_("You teach this class already."))
    if klass.seat_set.filter(user=user).exists():
        raise ClassError(_("%(name)s holds a seat in this class: a learner cannot also teach it.")
                         % {"name": user.get_username()})  # fmt: skip
    klass.co_instructors.add(user)
    log_action(actor, klass, "add_co_instructor", detail={"user": user.get_username()})
    return user


def remove_co_instructor(actor: User, klass: LabClass, who: int | str) -> None:
    """`who`: the co-instructor's id (the page), or their username or e-mail address (the API),
    looked up among the class's co-instructors only."""
    if klass.owner_id != actor.pk:
        raise NotOwner(_("Only the class's instructor can remove co-instructors."))
    if isinstance(who, str):
        text = who.strip()[:254]
        match = klass.co_instructors.filter(Q(username__iexact=text) | Q(email__iexact=text))
    else:
        match = klass.co_instructors.filter(pk=who)
    users = list(match[:2])
    user = users[0] if len(users) == 1 else None
    if user is None:
        raise ClassError(_("This person is not a co-instructor of the class."))
    klass.co_instructors.remove(user)
    log_action(actor, klass, "remove_co_instructor", detail={"user": user.get_username()})


def end_class(actor: User | None, klass: LabClass) -> LabClass:
    """End now: every seat's session ends and its VM goes, the reservations are released;
    progress and results stay (export)."""
    with transaction.atomic():
        klass = LabClass.objects.select_for_update().get(pk=klass.pk)
        if klass.state == LabClass.State.ENDED:
            return klass
        klass.state = LabClass.State.ENDED
        klass.ended_at = timezone.now()
        klass.save(update_fields=["state", "ended_at"])
        sessions = list(LabSession.objects.filter(seats__klass=klass, state__in=RUNNING).values_list("pk", flat=True))
        for session_id in sessions:
            end_session(session_id, SessionState.EXPIRED)
        release(klass)
        log_action(actor, klass, "end", detail={"sessions_ended": len(sessions)})
    return klass


def provision_now(actor: User | None, klass: LabClass) -> LabClass:
    """Prepare the seats now rather than at starts_at - lead (an instructor's "prepare now")."""
    klass = provision(klass)
    log_action(actor, klass, "provision", detail={"hosts": klass.host_shares})
    return klass


def next_lab(actor: User | None, klass: LabClass) -> LabClass:
    """Move the class on to its next lab: the seats' sessions of this lab end (their results stay),
    its prepared VMs are released, the hosts prepare the next lab's, and each learner's next
    "open my lab" starts it."""
    with transaction.atomic():
        klass = LabClass.objects.select_for_update().get(pk=klass.pk)
        if klass.state == LabClass.State.ENDED:
            raise ClassStateError(_("This class has ended."))
        if klass.current_lab + 1 >= len(klass.labs):
            raise ClassStateError(_("This is the class's last lab."))
        before = klass.lab_slug
        klass.current_lab += 1
        start, end = window(klass)
        klass.host_shares = admit(require_lab(klass.lab_slug).profile, klass.seats, start, end, exclude=klass.pk)
        klass.save(update_fields=["current_lab", "host_shares"])
        sessions = LabSession.objects.filter(current_seat__klass=klass, lab_slug=before, state__in=RUNNING)
        for session_id in list(sessions.values_list("pk", flat=True)):
            end_session(session_id, SessionState.EXPIRED)
        release(klass, lab_slug=before)
        log_action(actor, klass, "next_lab", detail={"from": before, "to": klass.lab_slug})
        prepare_templates(klass)
        sync_reservations(klass)
    return klass


CLASS_ACTIONS = ("open_joining", "close_joining", "add_seats", "provision", "next_lab", "end")


def class_action(actor: User, klass: LabClass, action: str, count: int | None = None) -> LabClass:
    """One class action by name (the page, the API and the command share the names)."""
    if action in ("open_joining", "close_joining"):
        set_joining(actor, klass, action == "open_joining")
        return klass
    if action == "add_seats":
        return add_seats(actor, klass, count or 0)
    if action == "provision":
        return provision_now(actor, klass)
    if action == "next_lab":
        return next_lab(actor, klass)
    if action == "end":
        return end_class(actor, klass)
    raise ClassError(_("Unknown action “%(action)s”.") % {"action": action[:40]})


def keep_seats_alive(klass: LabClass) -> None:
    """A seat's session lives until the class's end plus grace (a lab's own lifetime may be shorter)."""
    until = klass.ends_at + timedelta(minutes=klass.grace_minutes)
    short = LabSession.objects.filter(current_seat__klass=klass, state=SessionState.READY, expires_at__lt=until)
    for session_id in short.values_list("pk", flat=True):
        with transaction.atomic():
            update_fields(session_id, expected=[SessionState.READY], expires_at=until)


def advance(klass: LabClass, now: datetime | None = None) -> LabClass:
    """Move `klass` along its schedule: prepare seats from starts_at - lead, open at starts_at,
    end at ends_at + grace; while under way keep its reservations filled and its seats alive."""
    now = now or timezone.now()
    klass.refresh_from_db()
    if klass.state == LabClass.State.ENDED:
        return klass
    if now >= klass.ends_at + timedelta(minutes=klass.grace_minutes):
        return end_class(None, klass)
    provisioned = False
    if klass.state == LabClass.State.SCHEDULED and now >= klass.starts_at - timedelta(minutes=klass.lead_minutes):
        klass, provisioned = provision_now(None, klass), True  # sends the fills itself
    if klass.state == LabClass.State.PROVISIONING and now >= klass.starts_at:
        LabClass.objects.filter(pk=klass.pk, state=LabClass.State.PROVISIONING).update(state=LabClass.State.OPEN)
        klass.refresh_from_db()
    if klass.state in ACTIVE:
        if not provisioned:
            sync_reservations(klass)
        keep_seats_alive(klass)
    return klass


def tick(now: datetime | None = None) -> int:
    """Beat: advance every class not ended. Returns how many were looked at."""
    ids = list(LabClass.objects.exclude(state=LabClass.State.ENDED).values_list("pk", flat=True))
    for class_id in ids:
        try:
            advance(LabClass.objects.get(pk=class_id), now)
        except Exception:  # one class's trouble must not stop the others' schedule
            log.exception("class %s: advancing failed", class_id)
    return len(ids)
