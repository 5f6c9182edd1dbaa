"""Lab sessions, their per-step results, and the warm pool of pre-booted VMs."""

from __future__ import annotations

import secrets
import string

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.db import models
from django.utils.translation import gettext_lazy as _

from labs.hooks import hooks
from labs.states import RUNNING, SessionState

_ALPHABET = string.ascii_lowercase + string.digits


def id_prefixes() -> tuple[str, str]:
    """Session and pool-VM id prefixes of this deployment: the reconciler reaps only these, so
    VMs that other deployments or tests on the same libvirt host create are never touched."""
    base = str(getattr(settings, "LABS_ID_PREFIX", ""))
    return base + "s-", base + "pool-"


def _random(n: int = 10) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def new_session_id() -> str:
    """A short random id, safe as a libvirt session id ([a-z0-9-])."""
    return id_prefixes()[0] + _random()


def new_pool_id() -> str:
    return id_prefixes()[1] + _random()


class LabSessionQuerySet(models.QuerySet["LabSession"]):
    def running(self) -> LabSessionQuerySet:
        return self.filter(state__in=RUNNING)

    # The ownership rule, in one place: the lab page asks these, the API and websockets through
    # labs.services.access.
    def visible_to(self, user: User | AnonymousUser) -> LabSessionQuerySet:
        """Sessions `user` may see: their own; staff may observe every session, and the observer
        rules of other apps (settings.LABS_OBSERVER_RULES, e.g. a class's instructors) add the
        sessions they name, read-only."""
        if not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self
        seen = models.Q(user=user)
        for rule in hooks("LABS_OBSERVER_RULES"):
            seen |= models.Q(pk__in=rule(user).values("pk"))
        return self.filter(seen)

    def driven_by(self, user: User | AnonymousUser) -> LabSessionQuerySet:
        """Sessions `user` may drive (type, check, go back, reset, extend, stop): their own only."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(user=user)


class LabSession(models.Model):
    id = models.CharField(primary_key=True, max_length=32, default=new_session_id, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="lab_sessions")
    lab_slug = models.SlugField(max_length=80)
    profile = models.CharField(max_length=32, default="tiny")
    host = models.CharField(max_length=64, blank=True, default="")
    # The libvirt session id of the VM: the session id, or a warm-pool VM's id after hand-out.
    vm_id = models.CharField(max_length=32, blank=True, default="")
    state = models.CharField(max_length=16, choices=SessionState.choices, default=SessionState.QUEUED)
    current_step = models.PositiveIntegerField(default=1)
    # Step numbers whose checkpoint snapshot ("step-<n>") exists on the VM.
    checkpoints = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    last_activity = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    objects = LabSessionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "host"]), models.Index(fields=["user", "state"])]

    def __str__(self) -> str:
        return f"{self.id} ({self.lab_slug}, {self.state})"

    @property
    def queue_position(self) -> int | None:
        """1-based position among queued sessions (computed: one source of truth, the rows)."""
        if self.state != SessionState.QUEUED:
            return None
        ahead = LabSession.objects.filter(state=SessionState.QUEUED, created_at__lt=self.created_at).count()
        return ahead + 1


class StepResult(models.Model):
    """One press of Check (the latest per step is what the page shows)."""

    session = models.ForeignKey(LabSession, on_delete=models.CASCADE, related_name="results")
    step = models.PositiveIntegerField()
    passed = models.BooleanField()
    message = models.TextField(blank=True, default="")
    # Per assertion: {"ok", "en", "zh", "detail"} so the page can show the verdict in either language.
    details = models.JSONField(default=list, blank=True)
    duration_s = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.session_id} step {self.step}: {'pass' if self.passed else 'fail'}"


class Reservation(models.Model):
    """Prepared VMs held on one host for one group of learners (an instructor's class): the host
    agent keeps `size` VMs of `lab_slug` ready for it (fill_reservation) until it is released.

    `key` is opaque here (the classes app uses "class-<id>"); a start that names the key takes
    one of these VMs, and no other start ever does.
    """

    key = models.CharField(max_length=64)
    host = models.CharField(max_length=64)
    lab_slug = models.SlugField(max_length=80)
    profile = models.CharField(max_length=32)
    size = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["key", "host", "lab_slug"], name="one_reservation_per_host")]

    def __str__(self) -> str:
        return f"{self.key}: {self.size} x {self.lab_slug}@{self.host}"


class PoolVM(models.Model):
    """A pre-booted VM waiting for a learner; handed out by assigning it to a session."""

    class State(models.TextChoices):
        BOOTING = "booting", _("Booting")
        READY = "ready", _("Ready")
        ASSIGNED = "assigned", _("Assigned")

    id = models.CharField(primary_key=True, max_length=32, default=new_pool_id, editable=False)
    host = models.CharField(max_length=64)
    profile = models.CharField(max_length=32)
    # Set when the VM was prepared for one lab (step 1 set up and checkpointed while idle): its
    # hand-out costs no guest work at all. Blank: any lab of the profile can take it.
    lab_slug = models.CharField(max_length=64, blank=True, default="")
    state = models.CharField(max_length=16, choices=State.choices, default=State.BOOTING)
    session = models.OneToOneField(LabSession, null=True, blank=True, on_delete=models.SET_NULL, related_name="pool_vm")
    # Held for one group of learners (always prepared for its lab); None: the open warm pool.
    # Deleting a reservation row is release_reservation's last step, after its VMs are destroyed.
    reservation = models.ForeignKey(Reservation, null=True, blank=True, on_delete=models.CASCADE, related_name="vms")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        kind = f"{self.profile}, {self.lab_slug}" if self.lab_slug else self.profile
        return f"{self.id} ({kind}@{self.host}, {self.state})"
