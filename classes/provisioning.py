"""Preparing a class's seats ahead of its start: one Reservation per host holding its share of the
seats not yet running, filled by that host (task fill_reservation), released at the end.

`sync_reservations` is the one place that sizes them: a host's reservation holds its share less
the class's live seat sessions there, so a seat taken shrinks it and a seat whose VM died grows it
again (the host prepares a replacement from the same captured state, taken by the learner's next
start). Called after every join, seat action and resize, and by the beat tick.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import Count
from django.utils import timezone
from django.utils.translation import gettext as _

from classes.admission import admit_class
from classes.errors import ClassStateError
from classes.models import LabClass
from labs import task_calls
from labs.models import LabSession, PoolVM, Reservation
from labs.services.catalog import require_lab
from labs.states import RUNNING, SessionState

ACTIVE = (LabClass.State.PROVISIONING, LabClass.State.OPEN)


@dataclass(frozen=True)
class Readiness:
    """'seats ready 18/30': prepared VMs waiting plus seats whose session is ready, of the seats."""

    ready: int
    seats: int
    preparing: int  # VMs the hosts are preparing now


def seat_sessions_by_host(klass: LabClass) -> dict[str, int]:
    rows = (
        LabSession.objects.filter(current_seat__klass=klass, state__in=RUNNING, lab_slug=klass.lab_slug)
        .values("host")
        .annotate(n=Count("pk"))
    )
    return {row["host"]: row["n"] for row in rows}


def sync_reservations(klass: LabClass) -> list[Reservation]:
    """Size each host's reservation to its share less the seats running there, and ask a host to
    prepare VMs when it holds fewer than that. Sent on commit."""
    if klass.state not in ACTIVE:
        return []
    lab = require_lab(klass.lab_slug)
    running = seat_sessions_by_host(klass)
    key = klass.reservation_key()
    out = []
    with transaction.atomic():
        for host, share in sorted(klass.host_shares.items()):
            want = max(0, int(share) - running.get(host, 0))
            reservation, created = Reservation.objects.get_or_create(
                key=key, host=host, lab_slug=lab.slug, defaults={"profile": lab.profile, "size": want}
            )
            if not created and reservation.size != want:
                Reservation.objects.filter(pk=reservation.pk).update(size=want)
                reservation.size = want
            held = reservation.vms.exclude(state=PoolVM.State.ASSIGNED).count()
            if held < want:
                task_calls.fill_reservation.on(host, reservation.pk)
            out.append(reservation)
    return out


def prepare_templates(klass: LabClass) -> None:
    """Ask each host the class is placed on to build its labs' templates now, when the class is
    made or moved, not when its seats are: a template is one boot (~10 s under TCG), its clones
    about a second each. A host that has them already does nothing. Sent on commit."""
    for host in sorted(klass.host_shares):
        for lab_slug in klass.labs:
            task_calls.prepare_template.on(host, lab_slug)


def provision(klass: LabClass) -> LabClass:
    """Start preparing the seats now (the beat does it at starts_at - lead): place them on the hosts
    if they are not yet, create the reservations and ask each host to fill its own."""
    with transaction.atomic():
        klass = LabClass.objects.select_for_update().get(pk=klass.pk)
        if klass.state == LabClass.State.ENDED:
            raise ClassStateError(_("This class has ended."))
        if not klass.host_shares:
            klass.host_shares = admit_class(klass, klass.seats)
        if klass.state == LabClass.State.SCHEDULED:
            klass.state = LabClass.State.PROVISIONING
        klass.provisioned_at = klass.provisioned_at or timezone.now()
        klass.save(update_fields=["host_shares", "state", "provisioned_at"])
        sync_reservations(klass)
    return klass


def release(klass: LabClass, lab_slug: str = "") -> None:
    """Ask each host to destroy the class's VMs no learner took (of `lab_slug` only, if given) and
    drop its reservation."""
    held = Reservation.objects.filter(key=klass.reservation_key())
    for reservation in held.filter(lab_slug=lab_slug) if lab_slug else held:
        task_calls.release_reservation.on(reservation.host, reservation.pk)


def readiness(klass: LabClass) -> Readiness:
    vms = PoolVM.objects.filter(reservation__key=klass.reservation_key(), session=None)
    waiting = vms.filter(state=PoolVM.State.READY).count()
    preparing = vms.filter(state=PoolVM.State.BOOTING).count()
    seated = LabSession.objects.filter(current_seat__klass=klass, state=SessionState.READY).count()
    return Readiness(ready=min(klass.seats, waiting + seated), seats=klass.seats, preparing=preparing)
