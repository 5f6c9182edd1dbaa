"""Who teaches a class: its owner and its co-instructors see and act on that class only.

The same rule answers who may observe a learner's session: labs calls `observed_sessions` through
settings.LABS_OBSERVER_RULES (labs never imports classes), so an instructor watches the terminals
of their own class's seats, read-only, and no other session.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q, QuerySet

from classes.models import LabClass
from labs.models import LabSession


def taught_by(user: AbstractBaseUser | AnonymousUser) -> QuerySet[LabClass]:
    """The classes `user` teaches: as owner or as co-instructor."""
    if not user.is_authenticated:
        return LabClass.objects.none()
    return LabClass.objects.filter(Q(owner=user) | Q(co_instructors=user)).distinct()


def teaches(user: AbstractBaseUser | AnonymousUser, class_id: int) -> bool:
    """Whether `user` is the instructor or a co-instructor of class `class_id`."""
    return taught_by(user).filter(pk=class_id).exists()


def class_taught_by(user: AbstractBaseUser | AnonymousUser, class_id: int) -> LabClass | None:
    """Class `class_id` if `user` teaches it; None otherwise (never telling whether it exists)."""
    return taught_by(user).filter(pk=class_id).first()


def observed_sessions(user: AbstractBaseUser | AnonymousUser) -> QuerySet[LabSession]:
    """The sessions `user` may observe as a teacher: every session of a seat of a class they teach
    (the current one and those it had before), and nothing else."""
    if not user.is_authenticated:
        return LabSession.objects.none()
    return LabSession.objects.filter(seats__klass__in=taught_by(user).values("pk"))
