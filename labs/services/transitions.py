"""The one function that writes a session's state: a conditional update from the expected states."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.utils import timezone

from labs.models import LabSession
from labs.services import session_events
from labs.states import ENDED, TRANSITIONS, SessionState
from labs.timeline import marks

log = logging.getLogger(__name__)


def transition(session_id: str, to: SessionState, *, expected: Iterable[str] | None = None, **fields: Any) -> bool:
    """Move the session to `to` if it is in one of the accepted states; True if this call did it.

    The UPDATE … WHERE state IN (…) makes a duplicated or retried task a no-op, and two racing
    writers cannot both win. The change is pushed to the page after commit.
    """
    accepted = frozenset(expected) if expected is not None else TRANSITIONS[to]
    if not accepted <= TRANSITIONS[to]:
        raise ValueError(f"{sorted(accepted)} -> {to} is not a transition of the state machine")
    now = timezone.now()
    if to in ENDED and "ended_at" not in fields:
        fields["ended_at"] = now
    changed = LabSession.objects.filter(pk=session_id, state__in=accepted).update(state=to, updated_at=now, **fields)
    if not changed:
        log.info("session %s: transition to %s skipped (not in %s)", session_id, to, sorted(accepted))
        return False
    log.info("session %s -> %s", session_id, to)
    # Now, not on commit: the recorder must hold an ended session's last marker before storing it.
    marks.mark(session_id, "state", state=str(to), step=fields.get("current_step"))
    transaction.on_commit(lambda: _announce(session_id, to))
    return True


def update_fields(session_id: str, *, expected: Iterable[str], **fields: Any) -> bool:
    """A conditional update that keeps the state (e.g. advancing the step); pushed like a transition."""
    changed = LabSession.objects.filter(pk=session_id, state__in=list(expected)).update(
        updated_at=timezone.now(), **fields
    )
    if changed:
        if "current_step" in fields:
            marks.mark(session_id, "step", step=fields["current_step"])
        transaction.on_commit(lambda: session_events.push_session(session_id))
    return bool(changed)


def _announce(session_id: str, to: str) -> None:
    session_events.push_session(session_id)
    if to in ENDED:
        session_events.push_terminal_gone(session_id, str(SessionState(to).label))
