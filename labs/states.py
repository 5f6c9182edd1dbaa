"""The lab session state machine: states, and which previous states each transition accepts."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class SessionState(models.TextChoices):
    REQUESTED = "requested", _("Requested")  # placed on a host, provision task enqueued
    QUEUED = "queued", _("Waiting for a free VM slot")
    PROVISIONING = "provisioning", _("Starting the VM")
    READY = "ready", _("Ready")
    RESETTING = "resetting", _("Restoring a checkpoint")
    COMPLETED = "completed", _("Completed")
    EXPIRED = "expired", _("Expired")
    FAILED = "failed", _("Failed")
    DESTROYED = "destroyed", _("Stopped")


S = SessionState

# target state -> the states a session may be in for the transition to apply.
TRANSITIONS: dict[str, frozenset[str]] = {
    S.REQUESTED: frozenset({S.QUEUED}),
    S.PROVISIONING: frozenset({S.REQUESTED}),
    S.READY: frozenset({S.PROVISIONING, S.RESETTING}),
    S.RESETTING: frozenset({S.READY}),
    S.COMPLETED: frozenset({S.READY}),
    S.EXPIRED: frozenset({S.QUEUED, S.REQUESTED, S.PROVISIONING, S.READY, S.RESETTING}),
    S.FAILED: frozenset({S.QUEUED, S.REQUESTED, S.PROVISIONING, S.READY, S.RESETTING}),
    S.DESTROYED: frozenset(
        {S.QUEUED, S.REQUESTED, S.PROVISIONING, S.READY, S.RESETTING, S.COMPLETED, S.EXPIRED, S.FAILED}
    ),
}

# A session in one of these counts against the learner's limit and the host's capacity.
RUNNING: frozenset[str] = frozenset({S.QUEUED, S.REQUESTED, S.PROVISIONING, S.READY, S.RESETTING})
# A VM exists (or is being made) and must survive the reaper.
VM_LIVE: frozenset[str] = frozenset({S.REQUESTED, S.PROVISIONING, S.READY, S.RESETTING})
# The VM is gone or going: the terminal shows "gone".
ENDED: frozenset[str] = frozenset({S.COMPLETED, S.EXPIRED, S.FAILED, S.DESTROYED})
