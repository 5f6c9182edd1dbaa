"""Who may see a lab session and who may drive it: the one lookup the API and websockets share.

The owner drives their session; staff may observe any session, read-only; for anyone else a
session does not exist (the same 404, or websocket close 4403, as for an id nobody holds). The
rule itself is `LabSession.objects.visible_to` / `driven_by`.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from django.utils.translation import gettext as _

from labs.models import LabSession
from labs.services.errors import LabError


class SessionNotFound(LabError):
    """No such session, or one the caller may not see: the two are never told apart."""

    status = 404

    def __init__(self) -> None:
        super().__init__("Not found")


class ObserveOnly(LabError):
    """The caller may watch this session but not act on it."""

    status = 403

    def __init__(self) -> None:
        super().__init__(_("You can observe this lab session but not act on it: only its learner can."))


def session_for_user(user: User | AnonymousUser, session_id: str) -> tuple[LabSession, bool]:
    """The session `user` may see, and whether they may drive it; SessionNotFound otherwise."""
    session = LabSession.objects.visible_to(user).filter(pk=session_id).first()
    if session is None:
        raise SessionNotFound()
    return session, LabSession.objects.driven_by(user).filter(pk=session.pk).exists()


def driven_session_for_user(user: User | AnonymousUser, session_id: str) -> LabSession:
    """The session `user` may drive; SessionNotFound if they may not see it, ObserveOnly if they only observe."""
    session, may_drive = session_for_user(user, session_id)
    if not may_drive:
        raise ObserveOnly()
    return session
