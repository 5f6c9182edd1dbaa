"""Pushing session changes to the browser: channel-layer group names and payloads."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from labs.hooks import hooks
from labs.models import LabSession, StepResult
from labs.redis_names import events_group, terminal_group
from labs.schemas import AssertionOut, SessionOut, StepResultOut
from labs.states import SessionState

log = logging.getLogger(__name__)


def session_out(session: LabSession) -> SessionOut:
    """What the page needs to render a session: the API returns it, the websocket pushes its dump."""
    latest: dict[int, StepResult] = {}
    for result in session.results.all():
        latest[result.step] = result  # ordered by time: the last one wins
    return SessionOut(
        id=session.id,
        lab=session.lab_slug,
        state=SessionState(session.state),
        state_label=str(session.get_state_display()),
        current_step=session.current_step,
        checkpoints=list(session.checkpoints),
        queue_position=session.queue_position,
        error=session.error,
        created_at=session.created_at,
        ready_at=session.ready_at,
        expires_at=session.expires_at,
        results={
            str(step): StepResultOut(
                passed=r.passed,
                message=r.message,
                details=[AssertionOut(**detail) for detail in r.details],
                at=r.created_at,
            )
            for step, r in sorted(latest.items())
        },
    )


def session_payload(session: LabSession) -> dict[str, Any]:
    """`session_out` as plain JSON types, for the channel layer and the page's embedded state."""
    return session_out(session).model_dump(mode="json")


def send(group: str, message: dict[str, Any]) -> None:
    """Push to a group, best effort: the change is in the DB already and a page reloads it when it
    reconnects, so a push that fails must not fail the action (or the on-commit sends after it)."""
    layer = get_channel_layer()
    if layer is None:
        return
    for attempt in (1, 2):  # a pooled connection to a Redis that restarted fails once, then reconnects
        try:
            async_to_sync(layer.group_send)(group, message)
            return
        except Exception:
            if attempt == 2:
                log.warning("push to %s failed", group, exc_info=True)


def push_session(session_id: str, **extra: Any) -> None:
    """Send the session's current row (and optional extras such as a progress stage) to its page,
    then to the listeners other apps registered (LABS_SESSION_LISTENERS: a class's live grid)."""
    session = LabSession.objects.get(pk=session_id)
    payload = session_payload(session)
    send(events_group(session_id), {"type": "session.event", "session": payload, **extra})
    for listener in hooks("LABS_SESSION_LISTENERS"):
        try:
            listener(session, payload)
        except Exception:  # a listener's failure must not fail the action (as a failed push does not)
            log.warning("session %s: listener %s failed", session_id, listener, exc_info=True)


def push_progress(session_id: str, stage: str, detail: str = "") -> None:
    send(events_group(session_id), {"type": "session.progress", "stage": stage, "detail": detail})


def push_message(session_id: str, message: dict[str, Any]) -> None:
    """A message for the learner (e.g. from their instructor): shown on their page at once."""
    send(events_group(session_id), {"type": "session.message", "message": message})


def greetings(session: LabSession) -> list[dict[str, Any]]:
    """Frames other apps add when a session's events socket opens (LABS_SESSION_GREETERS)."""
    frames: list[dict[str, Any]] = []
    for greeter in hooks("LABS_SESSION_GREETERS"):
        try:
            frames.extend(greeter(session))
        except Exception:
            log.warning("session %s: greeter %s failed", session.id, greeter, exc_info=True)
    return frames


def push_terminal_gone(session_id: str, reason: str) -> None:
    send(terminal_group(session_id), {"type": "term.gone", "reason": reason})
