"""What a learner can do with a lab session. Views, API and consumers all call these."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from labs import host_registry, redis_names, task_calls
from labs.models import LabSession
from labs.services import limits, placement
from labs.services.catalog import get_lab
from labs.services.errors import (
    AlreadyRunning,
    CheckInProgress,
    EmailUnverified,
    LabNotFound,
    QueueFull,
    RateLimited,
    WrongState,
)
from labs.services.session_events import push_session
from labs.services.transitions import transition, update_fields
from labs.states import ENDED, RUNNING, SessionState
from portal.accounts import verification

S = SessionState
QUEUE_FULL = gettext_noop(
    "Every lab host is busy and %(count)d learners are waiting already. Try again in a few minutes."
)


def start_lab(user: User, slug: str, reservation_key: str = "") -> LabSession:
    """Create a session for `slug`: placed on a host (or the warm pool), or queued when all are full.

    `reservation_key` names VMs held for the learner's group (a class seat): one of them is
    taken first. Only the classes service passes it, after checking the learner holds a seat.
    """
    lab = get_lab(slug)
    if lab is None:
        raise LabNotFound(_("There is no lab called “%(slug)s”.") % {"slug": slug})
    if not verification.is_verified(user):
        raise EmailUnverified(str(verification.UNVERIFIED_MESSAGE))
    # One learner's double click must not slip past the running-lab limit.
    with host_registry.redis_client().lock(redis_names.start_lock(int(user.pk)), timeout=30, blocking_timeout=10):
        running = LabSession.objects.filter(user=user, state__in=RUNNING).order_by("-created_at")
        if running.count() >= limits.max_running_per_user():
            current = running[0]
            raise AlreadyRunning(
                _("You already have a running lab (%(lab)s). Stop it before starting another.")
                % {"lab": current.lab_slug},
                current.id,
            )
        if limits.hit_start_rate(int(user.pk)):
            count, window = limits.start_rate()
            raise RateLimited(
                _("Too many lab starts: at most %(count)d every %(minutes)d minutes. Try again later.")
                % {"count": count, "minutes": window // 60}
            )
        with placement.placement_lock(), transaction.atomic():
            session = LabSession.objects.create(user=user, lab_slug=lab.slug, profile=lab.profile, state=S.QUEUED)
            if not placement.place(session, reservation_key):
                waiting = LabSession.objects.filter(state=S.QUEUED).exclude(pk=session.pk).count()
                if waiting >= limits.max_queued():  # raising rolls the new row back
                    raise QueueFull(_(QUEUE_FULL) % {"count": waiting})
    session.refresh_from_db()
    if session.state == S.QUEUED:
        push_session(session.id)
    return session


def _require(session: LabSession, *states: str) -> None:
    session.refresh_from_db()
    if session.state not in states:
        raise WrongState(_("The lab is %(state)s; this needs it to be ready.") % {"state": session.get_state_display()})


def check_step(session: LabSession, step: int) -> None:
    """Verify `step` on the VM (asynchronously: the verdict arrives as a session event).

    A check costs the host work over output the learner controls, so one runs per session at a
    time (a second is refused while the first runs, not queued behind it) and each learner may
    start LABS_CHECK_RATE per window.
    """
    _require(session, S.READY)
    if step != session.current_step:
        raise WrongState(_("Only the current step (%(step)d) can be checked.") % {"step": session.current_step})
    claim = limits.claim_check(session.id)
    if claim is None:
        raise CheckInProgress(
            _("A check of this lab is still running. Its result will appear here; check again after it.")
        )
    budget, window = limits.check_time_budget()
    if limits.check_time_spent(int(session.user_id)) >= budget:  # before the count: this refusal costs none
        limits.release_check(session.id, claim)
        raise RateLimited(
            _("Your checks have used %(budget)d seconds of checking time in the last %(window)d seconds, the most "
              "one learner may use. Wait a moment, then check again.") % {"budget": budget, "window": window}
        )  # fmt: skip
    if limits.hit_check_rate(int(session.user_id)):
        limits.release_check(session.id, claim)
        count, window = limits.check_rate()
        raise RateLimited(
            _("Too many checks: at most %(count)d every %(seconds)d seconds. Wait a moment, then check again.")
            % {"count": count, "seconds": window}
        )
    touch(session)
    try:
        task_calls.check_session_step.on(session.host, session.id, step, claim)
    except Exception:
        limits.release_check(session.id, claim)  # nothing was sent: the next click must not wait for the marker
        raise


def goto_step(session: LabSession, step: int) -> None:
    """Go back to the checkpoint taken when `step` began (later steps' progress is dropped)."""
    _require(session, S.READY)
    if step not in session.checkpoints:
        raise WrongState(_("Step %(step)d has no checkpoint yet.") % {"step": step})
    with transaction.atomic():
        if not transition(session.id, S.RESETTING, last_activity=timezone.now()):
            raise WrongState(_("The lab changed state; reload the page."))
        task_calls.revert_session.on(session.host, session.id, step)


def reset_lab(session: LabSession) -> None:
    """Start the lab over: back to the checkpoint of step 1."""
    goto_step(session, 1)


def extend_lab(session: LabSession) -> LabSession:
    """Push the expiry back by one extension, never past the session's maximum lifetime."""
    _require(session, S.READY)
    assert session.expires_at is not None
    assert session.ready_at is not None
    cap = session.ready_at + limits.max_lifetime()
    new_expiry = min(max(session.expires_at, timezone.now()) + limits.extend_step(), cap)
    if new_expiry <= session.expires_at:
        raise WrongState(_("This lab has reached its maximum lifetime and cannot be extended."))
    with transaction.atomic():
        update_fields(session.id, expected=[S.READY], expires_at=new_expiry, last_activity=timezone.now())
    session.refresh_from_db()
    return session


def stop_lab(session: LabSession) -> None:
    """End the session now and destroy its VM."""
    session.refresh_from_db()
    if session.state == S.DESTROYED:
        return
    with transaction.atomic():
        if transition(session.id, S.DESTROYED) and session.host and session.vm_id:
            task_calls.destroy_session_vm.on(session.host, session.id)
            task_calls.place_queued_sessions.send()


def end_session(session_id: str, to: SessionState, error: str = "") -> bool:
    """completed/expired/failed, decided on the web side (expiry): the session's host destroys the
    VM and records `destroyed`. The host side ends sessions with labs.host.vmwork.end_here."""
    assert to in ENDED
    session = LabSession.objects.get(pk=session_id)
    with transaction.atomic():
        done = transition(session_id, to, error=error) if error else transition(session_id, to)
        if done and session.host:
            task_calls.destroy_session_vm.on(session.host, session_id)
            task_calls.place_queued_sessions.send()
    return done


def touch(session: LabSession) -> None:
    """Record learner activity (idle timeout)."""
    LabSession.objects.filter(pk=session.pk).update(last_activity=timezone.now())
