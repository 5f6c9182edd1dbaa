"""Who may replay a session's timeline, and who may download it.

Replay: the learner (their own sessions), whoever the observer rules name (a class's instructor
and co-instructors, for the sessions of their class's seats), and staff unless
LABS_TIMELINE_STAFF_SEES is off. Download (the .cast file): the learner only. For anyone else the
record does not exist: the same 404 as for an id nobody holds.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Q
from django.utils.translation import gettext as _

from labs.hooks import hooks
from labs.models import LabSession
from labs.services.access import SessionNotFound
from labs.services.errors import LabError
from labs.timeline.models import SessionTimeline


class NotRecordedYet(LabError):
    """The caller may see the session, but its record is stored only once the session has ended."""

    status = 404

    def __init__(self) -> None:
        super().__init__(_("This session has no stored record yet: it is ready once the session has ended."))


def replayable_by(user: User | AnonymousUser) -> Q:
    """The sessions whose timelines `user` may replay, as a filter on LabSession."""
    if not user.is_authenticated:
        return Q(pk__in=[])
    if user.is_staff and settings.LABS_TIMELINE_STAFF_SEES:
        return Q()
    seen = Q(user=user)
    for rule in hooks("LABS_OBSERVER_RULES"):
        seen |= Q(pk__in=rule(user).values("pk"))
    return seen


def timeline_for(user: User | AnonymousUser, session_id: str) -> SessionTimeline:
    """The stored record `user` may replay; SessionNotFound or NotRecordedYet otherwise."""
    session = LabSession.objects.filter(replayable_by(user), pk=session_id).first()
    if session is None:
        raise SessionNotFound()
    record = SessionTimeline.objects.filter(session=session).first()
    if record is None:
        raise NotRecordedYet()
    return record


def downloadable_timeline(user: User | AnonymousUser, session_id: str) -> SessionTimeline:
    """The learner's own stored record; SessionNotFound for anyone else."""
    record = timeline_for(user, session_id)
    if not user.is_authenticated or record.session.user_id != user.pk:
        raise SessionNotFound()
    return record
