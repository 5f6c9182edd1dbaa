"""Errors the session services raise; views, API and consumers turn them into responses."""

from __future__ import annotations


class LabError(Exception):
    """A request a learner made that cannot be honoured; `message` is shown to them."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class LabNotFound(LabError):
    status = 404


class AlreadyRunning(LabError):
    status = 409

    def __init__(self, message: str, session_id: str):
        super().__init__(message)
        self.session_id = session_id


class WrongState(LabError):
    status = 409


class RateLimited(LabError):
    status = 429


class CheckInProgress(LabError):
    """A check of this session is still running: its verdict arrives on the page; one at a time."""

    status = 429


class EmailUnverified(LabError):
    """The learner has not yet confirmed their e-mail address (ACCOUNT_EMAIL_VERIFICATION)."""

    status = 403


class QueueFull(LabError):
    """Every host is busy and the queue holds as many starts as it may: try again later."""

    status = 503
