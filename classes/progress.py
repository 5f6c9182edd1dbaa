"""Where each learner of a class stands on each step of a lab: the one computation the
instructor's grid, the class page, the API and the export share.

Per seat and step: not started / working / passed / failed, the number of checks (attempts), the
time spent on the step (until its pass, or until now), and the latest failure reason in both
languages; per step, the failing learners grouped by reason ("7 learners: edu is not bound").

The seat's state comes from its current session (or, after the class ended, its latest one);
attempts and reasons count every session the seat had of the lab (a re-provisioned seat keeps its
history). Steps advance only on a pass, so every step before the session's current step passed.
Time on a step runs from the previous step's pass (the session's ready time for step 1); a
goto/reset drops the later results (labs.host.vmwork.revert), so those steps show as not started.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from django.db.models import Prefetch
from django.utils import timezone

from classes.models import LabClass, Seat
from labs.models import LabSession, StepResult
from labs.services.catalog import get_lab
from labs.states import ENDED, SessionState


class CellState(StrEnum):
    NOT_STARTED = "not_started"
    WORKING = "working"
    PASSED = "passed"
    FAILED = "failed"


@dataclass(frozen=True)
class Reason:
    """A check's failure reason in both languages (the author's assertion messages)."""

    en: str
    zh: str

    def text(self, lang: str | None) -> str:
        return self.zh if (lang or "").startswith("zh") and self.zh else self.en


@dataclass(frozen=True)
class Cell:
    """One learner on one step."""

    step: int
    state: CellState
    attempts: int = 0
    time_s: float | None = None  # on the step: until its pass, or so far (None: not started)
    reason: Reason | None = None  # the latest failed check's reason, while the step is not passed


@dataclass(frozen=True)
class SeatProgress:
    """One learner across the steps of one lab."""

    seat_id: int
    user_id: int
    username: str
    waiting: bool
    session_id: str | None
    session_state: str  # a SessionState value, or "" without a session
    current_step: int  # 0 without a ready session
    cells: tuple[Cell, ...]

    def cell(self, step: int) -> Cell:
        return self.cells[step - 1]

    @property
    def passed_steps(self) -> int:
        return sum(c.state == CellState.PASSED for c in self.cells)


@dataclass(frozen=True)
class ReasonGroup:
    """The learners failing one step for one reason."""

    step: int
    reason: Reason
    seat_ids: tuple[int, ...]


@dataclass(frozen=True)
class ClassProgress:
    lab_slug: str
    steps: int
    seats: tuple[SeatProgress, ...]
    # Per step number: its failing learners grouped by reason, the largest group first.
    groups: dict[int, list[ReasonGroup]] = field(default_factory=dict)

    def counts(self, step: int) -> dict[CellState, int]:
        """How many learners are in each state on `step`."""
        out = dict.fromkeys(CellState, 0)
        for seat in self.seats:
            out[seat.cell(step).state] += 1
        return out


def failure_reason(result: StepResult) -> Reason:
    """The failed assertions' messages, joined, in both languages (falls back to the message)."""
    failed = [d for d in result.details if isinstance(d, dict) and not d.get("ok")]
    en = "; ".join(str(d.get("en", "")) for d in failed) or result.message
    zh = "; ".join(str(d.get("zh", "")) for d in failed) or en
    return Reason(en=en, zh=zh)


def _primary(seat: Seat, sessions: Sequence[LabSession]) -> LabSession | None:
    """The session the seat's cells describe: its current one, else its latest of the lab."""
    if seat.session_id is not None:
        for session in sessions:
            if session.pk == seat.session_id:
                return session
    return sessions[0] if sessions else None  # newest first (LabSession.Meta.ordering)


def seat_progress(seat: Seat, lab_slug: str, steps: int, now: datetime | None = None) -> SeatProgress:
    """`seat`'s cells on `lab_slug` (`steps` steps). Uses prefetched `sessions` and their results
    when present (class_progress prefetches them), else queries."""
    now = now or timezone.now()
    sessions = [s for s in seat.sessions.all() if s.lab_slug == lab_slug]
    sessions.sort(key=lambda s: s.created_at, reverse=True)
    primary = _primary(seat, sessions)
    results_by_step: dict[int, list[StepResult]] = defaultdict(list)
    for session in sessions:
        for result in session.results.all():
            results_by_step[result.step].append(result)
    for listed in results_by_step.values():
        listed.sort(key=lambda r: (r.created_at, r.pk))
    started = primary is not None and primary.ready_at is not None
    current = primary.current_step if primary is not None and started else 0
    end = (primary.ended_at if primary is not None and primary.state in ENDED else None) or now
    own = _by_step(primary) if primary is not None else {}
    cells: list[Cell] = []
    step_began: datetime | None = primary.ready_at if started and primary is not None else None
    completed = primary is not None and primary.state == SessionState.COMPLETED
    for number in range(1, steps + 1):
        attempts = len(results_by_step.get(number, []))
        mine = own.get(number, [])
        passed = next((r for r in reversed(mine) if r.passed), None)
        last = mine[-1] if mine else None
        if started and (number < current or (number == current and completed and passed is not None)):
            took = (passed.created_at - step_began).total_seconds() if passed and step_began else None
            cells.append(Cell(number, CellState.PASSED, attempts, took))
            step_began = passed.created_at if passed else step_began
        elif started and number == current:
            spent = (end - step_began).total_seconds() if step_began else None
            if last is not None and not last.passed:
                cells.append(Cell(number, CellState.FAILED, attempts, spent, failure_reason(last)))
            else:
                cells.append(Cell(number, CellState.WORKING, attempts, spent))
        else:
            cells.append(Cell(number, CellState.NOT_STARTED, attempts))
    user = seat.user
    return SeatProgress(
        seat_id=seat.pk,
        user_id=user.pk,
        username=user.get_username(),
        waiting=seat.waiting,
        session_id=primary.pk if primary is not None else None,
        session_state=primary.state if primary is not None else "",
        current_step=current,
        cells=tuple(cells),
    )


def _by_step(session: LabSession) -> dict[int, list[StepResult]]:
    out: dict[int, list[StepResult]] = defaultdict(list)
    for result in sorted(session.results.all(), key=lambda r: (r.created_at, r.pk)):
        out[result.step].append(result)
    return out


def group_by_reason(seats: Iterable[SeatProgress], steps: int) -> dict[int, list[ReasonGroup]]:
    """Per step, the learners whose cell failed, grouped by reason (largest group first)."""
    groups: dict[int, dict[Reason, list[int]]] = {n: defaultdict(list) for n in range(1, steps + 1)}
    for seat in seats:
        for cell in seat.cells:
            if cell.state == CellState.FAILED and cell.reason is not None:
                groups[cell.step][cell.reason].append(seat.seat_id)
    return {
        step: sorted(
            (ReasonGroup(step, reason, tuple(ids)) for reason, ids in by_reason.items()),
            key=lambda g: (-len(g.seat_ids), g.reason.en),
        )
        for step, by_reason in groups.items()
    }


def class_seats(klass: LabClass, *, removed: bool = False) -> list[Seat]:
    """The class's seats (`removed`: also those of learners an instructor removed, as the export
    wants them) with what progress reads, in a fixed number of queries."""
    seats = klass.seat_set.all() if removed else klass.seat_set.present()
    return list(
        seats.select_related("user").prefetch_related(
            Prefetch("sessions", queryset=LabSession.objects.prefetch_related("results"))
        )
    )


def lab_steps(lab_slug: str) -> int:
    lab = get_lab(lab_slug)
    return len(lab.steps) if lab is not None else 0


def class_progress(
    klass: LabClass, lab_slug: str | None = None, *, seats: Sequence[Seat] | None = None, now: datetime | None = None
) -> ClassProgress:
    """Every seat of `klass` on `lab_slug` (default: the class's current lab)."""
    slug = lab_slug or klass.lab_slug
    steps = lab_steps(slug)
    now = now or timezone.now()
    rows = tuple(seat_progress(seat, slug, steps, now) for seat in (seats if seats is not None else class_seats(klass)))
    return ClassProgress(lab_slug=slug, steps=steps, seats=rows, groups=group_by_reason(rows, steps))
