"""Progress per seat and step, from the rows the host writes (sessions and check results)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from classes.models import LabClass, Seat
from classes.progress import CellState, class_progress
from labs.models import LabSession, StepResult
from labs.states import SessionState

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def seat_with_session(klass: LabClass, user: User, *, current_step: int, ready_ago_s: float) -> Seat:
    ready = timezone.now() - timedelta(seconds=ready_ago_s)
    session = LabSession.objects.create(
        user=user, lab_slug=klass.lab_slug, state=SessionState.READY, host="h", vm_id="v",
        current_step=current_step, ready_at=ready, checkpoints=list(range(1, current_step + 1)),
    )  # fmt: skip
    seat = Seat.objects.create(klass=klass, user=user, session=session)
    seat.sessions.add(session)
    return seat


def fail(session: LabSession, step: int, en: str, zh: str) -> None:
    StepResult.objects.create(
        session=session, step=step, passed=False, message=en,
        details=[{"ok": True, "en": "fine", "zh": "好"}, {"ok": False, "en": en, "zh": zh, "detail": "exit 1"}],
    )  # fmt: skip


def test_cells_say_passed_failed_working_and_group_failures_by_reason(
    klass: LabClass, alice: User, bob: User, carol: User
) -> None:
    a = seat_with_session(klass, alice, current_step=2, ready_ago_s=300)
    b = seat_with_session(klass, bob, current_step=1, ready_ago_s=200)
    c = seat_with_session(klass, carol, current_step=1, ready_ago_s=100)
    assert a.session
    assert b.session
    assert c.session
    fail(a.session, 1, "no file", "没有文件")
    StepResult.objects.create(session=a.session, step=1, passed=True)
    fail(b.session, 1, "no file", "没有文件")
    fail(b.session, 1, "no file", "没有文件")
    fail(c.session, 1, "no file", "没有文件")
    waiting = Seat.objects.create(klass=klass, user=User.objects.create_user("dave"), waiting=True)

    progress = class_progress(klass)
    assert progress.steps == 2
    by_user = {s.username: s for s in progress.seats}
    alice_row, bob_row = by_user["alice"], by_user["bob"]
    assert [c.state for c in alice_row.cells] == [CellState.PASSED, CellState.WORKING]
    assert alice_row.cell(1).attempts == 2
    assert 0 <= (alice_row.cell(1).time_s or -1) < 301
    assert alice_row.cell(1).reason is None  # passed: the old failure is history
    assert bob_row.cell(1).state == CellState.FAILED
    assert bob_row.cell(1).attempts == 2
    reason = bob_row.cell(1).reason
    assert reason is not None
    assert reason.text("zh-hans") == "没有文件"
    assert (bob_row.cell(1).time_s or 0) >= 199
    assert bob_row.cell(2).state == CellState.NOT_STARTED
    assert by_user["dave"].waiting
    assert all(c.state == CellState.NOT_STARTED for c in by_user["dave"].cells)
    assert by_user["dave"].seat_id == waiting.pk
    # Step 1's failures: one group of two learners, one reason.
    (group,) = progress.groups[1]
    assert group.reason.en == "no file"
    assert sorted(group.seat_ids) == sorted([b.pk, c.pk])
    assert progress.counts(1) == {
        CellState.PASSED: 1, CellState.FAILED: 2, CellState.WORKING: 0, CellState.NOT_STARTED: 1,
    }  # fmt: skip


def test_a_completed_lab_shows_every_step_passed_and_time_stops_at_the_end(klass: LabClass, alice: User) -> None:
    seat = seat_with_session(klass, alice, current_step=2, ready_ago_s=600)
    assert seat.session is not None
    StepResult.objects.create(session=seat.session, step=1, passed=True)
    StepResult.objects.create(session=seat.session, step=2, passed=True)
    ended = timezone.now()
    LabSession.objects.filter(pk=seat.session.pk).update(state=SessionState.COMPLETED, ended_at=ended)
    row = class_progress(klass).seats[0]
    assert [c.state for c in row.cells] == [CellState.PASSED, CellState.PASSED]
    assert row.passed_steps == 2


def test_progress_of_a_class_of_30_takes_a_fixed_number_of_queries(
    klass: LabClass, django_assert_max_num_queries: Any
) -> None:
    """The grid and the export recompute it often: its queries must not grow with the seats."""
    for n in range(30):
        seat = seat_with_session(klass, User.objects.create_user(f"learner{n}"), current_step=1, ready_ago_s=60)
        assert seat.session is not None
        fail(seat.session, 1, "no file", "没有文件")
    with django_assert_max_num_queries(6):
        progress = class_progress(klass)
    assert progress.counts(1)[CellState.FAILED] == 30
    assert len(progress.groups[1][0].seat_ids) == 30
