"""Instructor classes: a class, its invite codes, its learners' seats, and its log and messages.

A class holds one or more labs in order; each learner who joins holds a seat, and the seat's
session is their lab session of the class's current lab. The VMs a class's seats will take are
held on the hosts as `labs.models.Reservation`s keyed `reservation_key()`; labs knows nothing of
classes beyond that opaque key.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from labs.models import LabSession

# Invite codes: 10 characters of a 32-symbol alphabet without look-alikes (0/O, 1/I/L): 50 bits,
# unguessable under the join rate limit, and easy to read off a projector.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 10


def new_invite_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


class LabClass(models.Model):
    """One class: an instructor's lab session for a group of learners, at a set time."""

    class State(models.TextChoices):
        SCHEDULED = "scheduled", _("Scheduled")  # before its seats' lead time
        PROVISIONING = "provisioning", _("Preparing seats")
        OPEN = "open", _("In progress")
        ENDED = "ended", _("Ended")  # seats torn down; progress and results stay

    title = models.CharField(max_length=120)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="classes_owned")
    co_instructors = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="classes_assisted")
    # Lab slugs in teaching order (validated against the catalog when set); the seats run labs[current_lab].
    labs = models.JSONField(default=list)
    current_lab = models.PositiveIntegerField(default=0)
    seats = models.PositiveIntegerField()
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    grace_minutes = models.PositiveIntegerField(default=15)  # seats live this long past ends_at
    lead_minutes = models.PositiveIntegerField(default=10)  # seats are prepared this long before starts_at
    joining_open = models.BooleanField(default=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.SCHEDULED)
    # Seats per host as admission control placed them ({host: n}): each host's Reservation holds
    # its share less the seats already running there (classes.provisioning.sync_reservations).
    host_shares = models.JSONField(default=dict, blank=True)
    provisioned_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-starts_at"]
        verbose_name = _("class")
        verbose_name_plural = _("classes")

    def __str__(self) -> str:
        return f"{self.title} ({self.pk})"

    def reservation_key(self) -> str:
        """The key of the VMs held for this class's seats (labs.models.Reservation.key)."""
        return f"class-{self.pk}"

    @property
    def lab_slug(self) -> str:
        """The lab the seats run now."""
        return str(self.labs[self.current_lab])


class Invite(models.Model):
    """An invite code (and link) to join a class: unguessable, revocable, optionally expiring."""

    klass = models.ForeignKey(LabClass, on_delete=models.CASCADE, related_name="invites")
    code = models.CharField(max_length=16, unique=True, default=new_invite_code)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.code} → {self.klass_id}"


class SeatQuerySet(models.QuerySet["Seat"]):
    def present(self) -> SeatQuerySet:
        """Seats of learners still in the class (an instructor may remove one; its results stay)."""
        return self.filter(left_at=None)

    def seated(self) -> SeatQuerySet:
        """Seats that count against the class's seat count."""
        return self.present().filter(waiting=False)

    def in_line(self) -> SeatQuerySet:
        """Learners waiting for a seat, first come first served."""
        return self.present().filter(waiting=True).order_by("joined_at", "id")


class Seat(models.Model):
    """A learner's place in a class. `session` is their session of the class's current lab; every
    session the seat ever had stays linked (`sessions`) so results can be exported after the end."""

    klass = models.ForeignKey(LabClass, on_delete=models.CASCADE, related_name="seat_set")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="class_seats")
    session = models.OneToOneField(
        LabSession, null=True, blank=True, on_delete=models.SET_NULL, related_name="current_seat"
    )
    sessions = models.ManyToManyField(LabSession, blank=True, related_name="seats")
    # Joined a full class: waits for a seat, in joined_at order (the position is computed).
    waiting = models.BooleanField(default=False)
    joined_at = models.DateTimeField(auto_now_add=True)
    # Removed by an instructor, or left by the learner: the seat frees for the next in line, the
    # results stay for the export. A learner who left may join again with the code (the same row).
    left_at = models.DateTimeField(null=True, blank=True)
    left_by_learner = models.BooleanField(default=False)

    objects = SeatQuerySet.as_manager()

    class Meta:
        ordering = ["joined_at", "id"]
        constraints = [models.UniqueConstraint(fields=["klass", "user"], name="one_seat_per_learner")]

    def __str__(self) -> str:
        return f"seat of {self.user_id} in {self.klass_id}"


# What the class page's log says for each action (ClassAction.action).
ACTION_LABELS = {
    "create": _("created the class"), "edit": _("edited the class"), "provision": _("prepared the seats"),
    "open_joining": _("opened joining"), "close_joining": _("closed joining"), "add_seats": _("added seats"),
    "new_invite": _("made an invite code"), "revoke_invite": _("revoked an invite code"),
    "add_co_instructor": _("added a co-instructor"), "remove_co_instructor": _("removed a co-instructor"),
    "reset": _("reset seats"), "extend": _("extended seats"), "reprovision": _("re-provisioned seats"),
    "remove": _("removed learners"), "leave": _("left the class"), "next_lab": _("moved on to the next lab"),
    "end": _("ended the class"),
}  # fmt: skip


class ClassAction(models.Model):
    """The class's log: every instructor action (who, when, what, on which seats)."""

    klass = models.ForeignKey(LabClass, on_delete=models.CASCADE, related_name="actions")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    action = models.CharField(max_length=32)
    seats = models.ManyToManyField(Seat, blank=True, related_name="+")
    detail = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.action} by {self.actor_id}"

    @property
    def label(self) -> str:
        return str(ACTION_LABELS.get(self.action, self.action))


class ClassMessage(models.Model):
    """A message or hint from an instructor to one seat, or (seat None) to the whole class."""

    klass = models.ForeignKey(LabClass, on_delete=models.CASCADE, related_name="messages")
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    seat = models.ForeignKey(Seat, null=True, blank=True, on_delete=models.CASCADE, related_name="messages")
    text = models.TextField(max_length=1000)
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["sent_at", "id"]

    def __str__(self) -> str:
        return f"message to {self.seat_id or 'class'} in {self.klass_id}"
