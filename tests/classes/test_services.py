"""The class services against the DB and a private Redis with an advertised host: admission,
provisioning's reservations, joining and the waiting line, seat and class actions, the end."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from classes import lifecycle
from classes.errors import ClassError, ClassStateError, InviteInvalid, NoCapacity, NotInstructor
from classes.joining import join, start_seat_session, waiting_position
from classes.lifecycle import ClassSpec
from classes.models import ClassAction, LabClass, Seat
from classes.provisioning import readiness
from classes.seats import act_on_seats, leave_class
from labs.models import LabSession, PoolVM, Reservation
from labs.states import SessionState
from tests import lab_stack
from tests.classes.conftest import HOST
from tests.labs.conftest import SentTask

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def spec(slug: str, seats: int = 2, **kw: Any) -> ClassSpec:
    now = timezone.now()
    fields: dict[str, Any] = {
        "title": "Workshop", "labs": [slug], "starts_at": now + timedelta(minutes=5),
        "ends_at": now + timedelta(hours=1), "seats": seats, "lead_minutes": 10, **kw,
    }  # fmt: skip
    return ClassSpec(**fields)


def test_admission_refuses_a_class_the_hosts_cannot_hold_and_names_the_shortfall(teacher: User, lab_world: str) -> None:
    # The lab world's host advertises 10 VM slots.
    with pytest.raises(NoCapacity, match=r"needs 30 x 176 MiB \(lab profile tiny\), the hosts have room for 10"):
        lifecycle.create_class(teacher, spec(lab_world, seats=30))
    first = lifecycle.create_class(teacher, spec(lab_world, seats=7))
    assert first.host_shares == {HOST: 7}
    # A class at the same time counts against the host; one after it does not.
    with pytest.raises(NoCapacity, match="room for 3"):
        lifecycle.create_class(teacher, spec(lab_world, seats=4))
    later = timezone.now() + timedelta(days=1)
    lifecycle.create_class(teacher, spec(lab_world, seats=10, starts_at=later, ends_at=later + timedelta(hours=1)))
    with pytest.raises(NoCapacity):
        lifecycle.add_seats(teacher, first, 4)
    assert lifecycle.add_seats(teacher, first, 3).seats == 10


def test_seats_spread_over_hosts_by_room(teacher: User, lab_world: str) -> None:
    lab_stack.advertise_host("second", max_vms=5)
    made = lifecycle.create_class(teacher, spec(lab_world, seats=9))
    assert made.host_shares == {HOST: 6, "second": 3}  # room 10 and 5: seats go where most room is left


def test_only_instructors_create_and_bad_fields_are_named(alice: User, teacher: User, lab_world: str) -> None:
    with pytest.raises(NotInstructor):
        lifecycle.create_class(alice, spec(lab_world))
    with pytest.raises(ClassError, match="no lab called “nope”"):
        lifecycle.create_class(teacher, spec("nope"))
    with pytest.raises(ClassError, match="end after it starts"):
        lifecycle.create_class(teacher, spec(lab_world, ends_at=timezone.now()))
    with pytest.raises(ClassError, match="1 to 200 seats"):
        lifecycle.create_class(teacher, spec(lab_world, seats=0))


def test_provisioning_ahead_reserves_the_seats_and_asks_the_host_to_fill_them(
    teacher: User, lab_world: str, sent_tasks: list[SentTask], django_capture_on_commit_callbacks: Any
) -> None:
    far = timezone.now() + timedelta(hours=2)
    with django_capture_on_commit_callbacks(execute=True):
        made = lifecycle.create_class(teacher, spec(lab_world, starts_at=far, ends_at=far + timedelta(hours=1)))
    assert made.state == LabClass.State.SCHEDULED
    assert not Reservation.objects.exists()  # before its lead time: nothing held yet
    # ...but the host builds the lab's template at once: at the lead time only clones are left to make.
    assert [(t.name, t.queue, t.args) for t in sent_tasks] == [
        ("labs.host.tasks.prepare_template", f"host.{HOST}", (lab_world,))
    ]
    sent_tasks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.tick(now=far - timedelta(minutes=9))
    made.refresh_from_db()
    assert made.state == LabClass.State.PROVISIONING
    (reservation,) = Reservation.objects.all()
    assert (reservation.key, reservation.host, reservation.size) == (made.reservation_key(), HOST, 2)
    assert [(t.name, t.queue, t.args) for t in sent_tasks] == [
        ("labs.host.tasks.fill_reservation", f"host.{HOST}", (reservation.pk,))
    ]
    PoolVM.objects.create(host=HOST, profile="tiny", lab_slug=lab_world, state=PoolVM.State.READY,
                          reservation=reservation)  # fmt: skip
    assert readiness(made).ready == 1
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.tick(now=far)
    made.refresh_from_db()
    assert made.state == LabClass.State.OPEN


def test_joining_takes_a_prepared_vm_and_a_full_class_puts_learners_in_line(
    teacher: User, alice: User, bob: User, carol: User, lab_world: str, django_capture_on_commit_callbacks: Any
) -> None:
    now = timezone.now()
    made = lifecycle.create_class(teacher, spec(lab_world, seats=1, starts_at=now, ends_at=now + timedelta(hours=1)))
    assert made.state == LabClass.State.OPEN or made.state == LabClass.State.PROVISIONING
    reservation = Reservation.objects.get(key=made.reservation_key())
    vm = PoolVM.objects.create(host=HOST, profile="tiny", lab_slug=lab_world, state=PoolVM.State.READY,
                               reservation=reservation)  # fmt: skip
    code = made.invites.get().code
    with pytest.raises(InviteInvalid):
        join(alice, "AAAAAAAAAA")
    with pytest.raises(ClassStateError, match="You teach this class"):
        join(teacher, code)
    seat = join(alice, code.lower()[:5] + "-" + code.lower()[5:])  # as read off a projector
    assert join(alice, code) == seat  # joining twice is the same seat
    with django_capture_on_commit_callbacks(execute=True):
        session = start_seat_session(seat)
    vm.refresh_from_db()
    assert vm.session_id == session.pk, "the seat took the VM prepared for the class"
    assert session.state == SessionState.REQUESTED
    reservation.refresh_from_db()
    assert reservation.size == 0, "the taken seat is no longer held spare"
    late = join(bob, code)
    later = join(carol, code)
    assert (late.waiting, waiting_position(late), waiting_position(later)) == (True, 1, 2)
    with pytest.raises(ClassStateError, match="number 1 in line"):
        start_seat_session(late)
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.add_seats(teacher, made, 1)
    late.refresh_from_db()
    assert not late.waiting
    assert late.session is not None
    assert waiting_position(later) == 1


def test_a_seat_whose_session_failed_gets_a_new_one_and_the_host_a_refill(
    klass_open: LabClass, alice: User, django_capture_on_commit_callbacks: Any, sent_tasks: list[SentTask]
) -> None:
    seat = join(alice, klass_open.invites.get().code)
    with django_capture_on_commit_callbacks(execute=True):
        first = start_seat_session(seat)
    LabSession.objects.filter(pk=first.pk).update(state=SessionState.FAILED)
    with django_capture_on_commit_callbacks(execute=True):
        second = start_seat_session(seat)
    assert second.pk != first.pk
    assert set(seat.sessions.values_list("pk", flat=True)) == {first.pk, second.pk}


def test_seat_actions_act_on_ready_seats_skip_others_and_are_logged(
    klass_open: LabClass, teacher: User, alice: User, bob: User, sent_tasks: list[SentTask],
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    code = klass_open.invites.get().code
    a, b = join(alice, code), join(bob, code)
    with django_capture_on_commit_callbacks(execute=True):
        start_seat_session(a)
    assert a.session is not None
    LabSession.objects.filter(pk=a.session.pk).update(state=SessionState.READY, checkpoints=[1, 2], current_step=2,
                                                      expires_at=timezone.now())  # fmt: skip
    sent_tasks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        report = act_on_seats(teacher, klass_open, [a.pk, b.pk], "reset", step=1)
    assert report.done == [a.pk]
    assert b.pk in report.skipped
    assert [t.name for t in sent_tasks] == ["labs.host.tasks.revert_session"]
    entry = ClassAction.objects.filter(action="reset").get()
    assert entry.actor == teacher
    assert entry.detail["step"] == 1
    with pytest.raises(ClassError, match="no seat"):
        act_on_seats(teacher, klass_open, [a.pk + 1000], "extend")
    with pytest.raises(ClassError, match="from 1 to 2"):
        act_on_seats(teacher, klass_open, [a.pk], "reset", step=3)


def test_ending_a_class_ends_its_seats_and_releases_its_reservations(
    klass_open: LabClass, teacher: User, alice: User, sent_tasks: list[SentTask],
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    seat = join(alice, klass_open.invites.get().code)
    with django_capture_on_commit_callbacks(execute=True):
        session = start_seat_session(seat)
    LabSession.objects.filter(pk=session.pk).update(state=SessionState.READY)
    reservation = Reservation.objects.get(key=klass_open.reservation_key())
    sent_tasks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.end_class(teacher, klass_open)
    session.refresh_from_db()
    assert session.state == SessionState.EXPIRED
    sent = {(t.name, t.args) for t in sent_tasks}
    assert ("labs.host.tasks.destroy_session_vm", (session.pk,)) in sent
    assert ("labs.host.tasks.release_reservation", (reservation.pk,)) in sent
    klass_open.refresh_from_db()
    assert klass_open.state == LabClass.State.ENDED
    with pytest.raises(ClassStateError, match="ended"):
        join(alice, klass_open.invites.get().code)


def test_moving_on_to_the_next_lab_ends_this_labs_seats_and_prepares_the_next(
    teacher: User, alice: User, lab_world: str, settings: Any, sent_tasks: list[SentTask],
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    import shutil

    labs_dir = settings.CONTENT_DIR / "labs"
    shutil.copytree(labs_dir / lab_world, labs_dir / "relay-two")
    meta = labs_dir / "relay-two" / "lab.yaml"
    meta.write_text(meta.read_text().replace(f"slug: {lab_world}", "slug: relay-two"))
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        made = lifecycle.create_class(teacher, spec(lab_world, labs=[lab_world, "relay-two"], starts_at=now))
    seat = join(alice, made.invites.get().code)
    with django_capture_on_commit_callbacks(execute=True):
        first = start_seat_session(seat)
    old = Reservation.objects.get(key=made.reservation_key(), lab_slug=lab_world)
    sent_tasks.clear()
    with django_capture_on_commit_callbacks(execute=True):
        moved = lifecycle.class_action(teacher, made, "next_lab")
    assert moved.lab_slug == "relay-two"
    first.refresh_from_db()
    assert first.state == SessionState.EXPIRED
    assert ("labs.host.tasks.release_reservation", (old.pk,)) in {(t.name, t.args) for t in sent_tasks}
    new = Reservation.objects.get(key=made.reservation_key(), lab_slug="relay-two")
    assert new.size == 2
    with django_capture_on_commit_callbacks(execute=True):
        second = start_seat_session(seat)
    assert second.lab_slug == "relay-two"
    with pytest.raises(ClassStateError, match="last lab"):
        lifecycle.class_action(teacher, moved, "next_lab")


def test_removing_a_learner_frees_their_seat_for_the_next_in_line_and_keeps_their_results(
    klass_open: LabClass, teacher: User, alice: User, bob: User, carol: User,
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    from classes.export import rows

    code = klass_open.invites.get().code
    a, _b, c = join(alice, code), join(bob, code), join(carol, code)
    assert c.waiting
    with django_capture_on_commit_callbacks(execute=True):
        session = start_seat_session(a)
        report = act_on_seats(teacher, klass_open, [a.pk], "remove")
    assert report.done == [a.pk]
    session.refresh_from_db()
    assert session.state == SessionState.DESTROYED
    assert not Seat.objects.get(pk=c.pk).waiting, "the next in line took the freed seat"
    with pytest.raises(ClassStateError, match="removed you"):
        join(alice, code)
    assert "alice" in {row["learner"] for row in rows(klass_open)}, "the export keeps the removed learner"


def test_a_learner_who_leaves_frees_their_seat_keeps_their_results_and_may_join_again(
    klass_open: LabClass, teacher: User, alice: User, bob: User, carol: User,
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    from classes.export import rows

    code = klass_open.invites.get().code
    a, _b, c = join(alice, code), join(bob, code), join(carol, code)
    with django_capture_on_commit_callbacks(execute=True):
        first = start_seat_session(a)
        leave_class(a)
    first.refresh_from_db()
    assert first.state == SessionState.DESTROYED
    assert not Seat.objects.get(pk=c.pk).waiting, "the next in line took the freed seat, as after a removal"
    entry = ClassAction.objects.get(action="leave")
    assert (entry.actor, list(entry.seats.all())) == (alice, [a])
    assert "alice" in {row["learner"] for row in rows(klass_open)}, "the export keeps the learner who left"
    with pytest.raises(ClassStateError, match="You left this class"):
        start_seat_session(a)
    with pytest.raises(ClassStateError, match="no longer in this class"):
        leave_class(a)
    again = join(alice, code)
    assert (again.pk, again.left_at, again.waiting) == (a.pk, None, True), "the same seat, in line: the class is full"
    assert waiting_position(again) == 1
    with django_capture_on_commit_callbacks(execute=True):
        act_on_seats(teacher, klass_open, [c.pk], "remove")
    again.refresh_from_db()
    assert not again.waiting
    assert again.session is not None
    assert again.session.pk != first.pk
    assert set(again.sessions.values_list("pk", flat=True)) == {first.pk, again.session.pk}, "both sessions' results"
    with pytest.raises(ClassStateError, match="removed you"):
        join(carol, code)  # unlike a learner who left, a removed one stays out
