"""Lab session operations: plain functions called by views, the API, tasks and consumers."""

from labs.services.errors import (
    AlreadyRunning,
    EmailUnverified,
    LabError,
    LabNotFound,
    QueueFull,
    RateLimited,
    WrongState,
)
from labs.services.sessions import (
    check_step,
    end_session,
    extend_lab,
    goto_step,
    reset_lab,
    start_lab,
    stop_lab,
    touch,
)

__all__ = [
    "AlreadyRunning",
    "EmailUnverified",
    "LabError",
    "LabNotFound",
    "QueueFull",
    "RateLimited",
    "WrongState",
    "check_step",
    "end_session",
    "extend_lab",
    "goto_step",
    "reset_lab",
    "start_lab",
    "stop_lab",
    "touch",
]
