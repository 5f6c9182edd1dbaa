"""Errors the class services raise. They are LabErrors, so the API's handler and the pages show
their message with their status the same way as a lab session's."""

from __future__ import annotations

from django.utils.translation import gettext as _

from labs.services.errors import LabError


class ClassError(LabError):
    """A class operation that cannot be done; `message` says why."""

    status = 400


class ClassNotFound(ClassError):
    """No such class, or one the caller may not see: the two are never told apart."""

    status = 404

    def __init__(self) -> None:
        super().__init__("Not found")  # as labs says it for a session: the two are never told apart


class NotInstructor(ClassError):
    status = 403

    def __init__(self) -> None:
        super().__init__(_("Only instructors can create classes. Ask the site's staff for the instructor role."))


class NotOwner(ClassError):
    """A co-instructor asking for what only the class's owner may do (co-instructors, say)."""

    status = 403


class ClassStateError(ClassError):
    """The class is not in a state that allows this (ended, joining closed, …)."""

    status = 409


class NoCapacity(ClassError):
    """Admission control: the hosts cannot hold the seats asked for."""

    status = 409


class InviteInvalid(ClassError):
    status = 404

    def __init__(self) -> None:
        super().__init__(_("This invite code is not valid: it may be mistyped, revoked or expired."))
