"""Ending sessions that ran out of time: past their lifetime, or idle too long (beat, web queue)."""

from __future__ import annotations

from django.db.models import Q
from django.utils import timezone

from labs.models import LabSession
from labs.services import limits
from labs.services.sessions import end_session
from labs.states import SessionState

S = SessionState


def expire_sessions() -> list[str]:
    """Sessions past their TTL or idle too long → expired (their host tears the VM down); starts
    that waited in the queue too long → expired with a message (they hold no VM)."""
    now = timezone.now()
    due = LabSession.objects.filter(state=S.READY).filter(
        Q(expires_at__lt=now) | Q(last_activity__lt=now - limits.idle_timeout())
    )
    expired = [s.id for s in due if end_session(s.id, S.EXPIRED)]
    waited = LabSession.objects.filter(state=S.QUEUED, created_at__lt=now - limits.queue_timeout())
    message = "No VM became free in time. Please start the lab again."
    return expired + [sid for sid in waited.values_list("id", flat=True) if end_session(sid, S.EXPIRED, message)]
