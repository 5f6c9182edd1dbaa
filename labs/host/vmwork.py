"""What the host agent's tasks do to VMs on this host (labs/host/tasks.py calls these).

A failure here is recorded and its VM torn down here, at once: the host never asks the web side
to queue a teardown back onto itself.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

from django.conf import settings
from django.db import transaction
from django.utils import timezone, translation
from django.utils.translation import gettext_noop

from labs import host_registry, task_calls
from labs.catalog import Lab
from labs.host import console_relay, templates, verify
from labs.hypervisor import VM, DomainMissing, HostUnreachable, Hypervisor, HypervisorError
from labs.hypervisor.errors import TemplateInvalid
from labs.models import LabSession, PoolVM, StepResult
from labs.redis_names import session_keys
from labs.services import limits
from labs.services.catalog import require_lab
from labs.services.session_events import push_progress, push_session
from labs.services.transitions import transition, update_fields
from labs.states import ENDED, SessionState
from labs.timeline import marks

S = SessionState
log = logging.getLogger(__name__)
BOOT_TIMEOUT_S = 120.0


class CheckpointPending(Exception):
    """A check arrived before its step's checkpoint was taken: the task retries it shortly."""


@contextlib.contextmanager
def hypervisor() -> Iterator[Hypervisor]:
    """A libvirt connection for this task, in this process (never shared across fork)."""
    with Hypervisor.connect(settings.LIBVIRT_URI) as hv:
        yield hv


def end_here(session_id: str, to: SessionState, error: str = "") -> bool:
    """completed/expired/failed, and the VM torn down on this host now; True if this call ended it."""
    assert to in ENDED
    done = transition(session_id, to, error=error) if error else transition(session_id, to)
    if done:
        try:
            destroy(session_id)
        except HypervisorError:  # libvirt away: the reconciler reaps the VM when it is back
            log.exception("session %s: teardown failed", session_id)
        task_calls.place_queued_sessions.send()  # a slot is free
    return done


def checkpoint(step: int) -> str:
    return f"step-{step}"


def provision(session_id: str) -> None:
    """requested → provisioning → ready: boot (or take a warm VM), set up step 1, checkpoint it.

    A warm VM has never been used (handed-out VMs are destroyed with their session), so it needs
    no reset. A clone of the lab's template (prepared for this lab, or restored now) has step 1 set
    up, and its step-1 checkpoint is that template (revert() clones it again). Otherwise the
    session is ready as soon as step 1 is set up and the checkpoint is taken right after, while
    the relay holds back keystrokes (typed since the console appeared) so it cannot contain them.
    """
    # Connect first: libvirt away raises HostUnreachable (the task retries) with nothing changed.
    with hypervisor() as hv:
        if not _begin_provisioning(session_id):
            return  # a duplicate delivery, or the learner stopped it already
        session = LabSession.objects.get(pk=session_id)
        console_relay.wake(session.host)  # attach the console now: the page shows the VM coming up
        try:
            _provision(hv, session)
        except (HypervisorError, verify.StepCommandFailed, TimeoutError):
            log.exception("session %s: provisioning failed", session_id)
            end_here(session_id, S.FAILED, error=VM_NOT_STARTED)  # the detail is logged, never shown
        finally:
            console_relay.release_input(session_id)
            if LabSession.objects.filter(state=S.QUEUED).exists():
                task_calls.place_queued_sessions.send()  # this boot's slot is free for the next start


def _begin_provisioning(session_id: str) -> bool:
    """requested → provisioning, with the learner's keystrokes held first: the relay attaches as
    soon as it sees the session provisioning (within its 0.5 s poll), and keys typed early would
    otherwise reach a VM still booting, where the serial port drops the first ones."""
    made_hold = console_relay.hold_input(session_id)
    if transition(session_id, S.PROVISIONING):
        return True
    if made_hold:  # not ours to provision; a hold already there belongs to whoever provisions it
        console_relay.release_input(session_id)
    return False


def _provision(hv: Hypervisor, session: LabSession) -> None:
    session_id = session.id
    lab = require_lab(session.lab_slug)
    pool_vm = PoolVM.objects.filter(session_id=session_id).first()
    prepared = pool_vm is not None and pool_vm.lab_slug == lab.slug
    set_up = prepared  # step 1's setup has run in the VM (a prepared VM, or a clone of the lab's template)
    started = time.monotonic()
    if pool_vm is not None:
        push_progress(session_id, "warm", "Taking a pre-booted VM")
        vm = hv.vm(session.vm_id)
    else:
        vm, set_up = _cold_start(hv, session, lab)
    push_progress(session_id, "agent", "Waiting for the guest agent")
    vm.wait_ready(BOOT_TIMEOUT_S)
    if not set_up:
        push_progress(session_id, "setup", "Preparing step 1")
        verify.run_setup(vm, lab.step(1))
    log.info("session %s: ready in %.2fs", session_id, time.monotonic() - started)
    now = timezone.now()
    became_ready = transition(
        session_id, S.READY, expected=[S.PROVISIONING], current_step=1, checkpoints=[1] if set_up else [],
        ready_at=now, last_activity=now, expires_at=now + limits.ttl(),
    )  # fmt: skip
    if not became_ready:
        vm.destroy()  # stopped while we booted: leave nothing behind
        return
    if not set_up:
        vm.snapshot(checkpoint(1))
        marks.mark(session_id, "checkpoint", step=1)
        update_fields(session_id, expected=[S.READY], checkpoints=[1])
    if pool_vm is not None or not set_up:
        # Refill the pool (or build the template this cold start asked for) only now: a boot
        # competing for the CPU would slow this hand-out.
        task_calls.fill_pool.on(session.host)


def _cold_start(hv: Hypervisor, session: LabSession, lab: Lab) -> tuple[VM, bool]:
    """No warm VM for the session: a clone of the lab's template when this host has one (step 1
    is set up in it already; ~1 s instead of a boot), else a boot, and the template is asked for
    so that the next cold start of the lab clones. Returns the VM and whether step 1 is set up."""
    template = templates.find(hv, lab.slug, lab.profile)
    if template is not None:
        push_progress(session.id, "warm", "Restoring a prepared VM")
        try:
            return hv.restore_clone(template, session.vm_id, settings.GUEST_IMAGE_DIR, BOOT_TIMEOUT_S), True
        except TemplateInvalid:  # removed or broken since: boot instead
            log.exception("session %s: cloning template %s failed; booting", session.id, template.key)
    push_progress(session.id, "boot", "Booting the VM")
    templates.request(hv, lab.slug, lab.profile)
    return hv.create_vm(session.vm_id, lab.profile, settings.GUEST_IMAGE_DIR), False


def check(session_id: str, step_number: int, claim: str = "") -> None:
    """Run the step's check; store the verdict; on a pass, set up and checkpoint the next step.

    A check pressed right after the VM became ready may arrive before step 1's checkpoint exists:
    CheckpointPending makes the task retry, so a pass (which sets up step 2) cannot overtake it.
    (Later steps may have none: a session past its disk budget takes no more checkpoints.)
    libvirtd going away mid-check (HostUnreachable, or any error on a connection that died) is
    retried by the task too: the VM runs on without libvirtd, so the lab goes on.
    `claim` is the session's in-flight check marker: released just before the verdict is shown,
    so the learner's next click is not refused (the task releases it too, however it ends).
    """
    session = LabSession.objects.get(pk=session_id)
    if session.state != S.READY or session.current_step != step_number:
        return
    if not session.checkpoints:
        raise CheckpointPending(f"session {session_id}: step {step_number} has no checkpoint yet")
    lab = require_lab(session.lab_slug)
    push_progress(session_id, "checking", str(step_number))
    started = time.monotonic()
    with hypervisor() as hv, _charged(session, started):
        try:
            _check(hv, session, lab, step_number, claim)
        except HostUnreachable:
            log.warning("session %s: libvirt went away during the check; retrying", session_id)
            raise
        except (HypervisorError, verify.StepCommandFailed) as exc:
            if not libvirt_alive(hv):
                log.warning("session %s: libvirt connection lost during the check (%s); retrying", session_id, exc)
                raise HostUnreachable(f"libvirt connection lost during the check: {exc}") from exc
            log.exception("session %s: check failed", session_id)
            end_here(session_id, S.FAILED, error=VM_STOPPED_ANSWERING)


# What a failed session tells its learner (message ids: the page shows them in the learner's
# language); libvirt's own words, which may name hosts and paths, go to the log only.
VM_NOT_STARTED = gettext_noop("Your VM could not be started. Please start the lab again.")
CHECKPOINT_NOT_RESTORED = gettext_noop("The checkpoint could not be restored. Please start the lab again.")
VM_STOPPED_ANSWERING = gettext_noop("Your VM stopped answering. Please start the lab again.")
NO_MORE_CHECKPOINTS = gettext_noop(
    "Your lab's disks and checkpoints use %(used)d MiB, over its %(budget)d MiB budget: no checkpoint was "
    "taken for this step, so you cannot go back to its beginning. Earlier checkpoints still work."
)


def _in_both_languages(message: str, **values: object) -> dict[str, str]:
    """A message for the page in English and Chinese (it shows the learner's language)."""
    with translation.override("zh-hans"):
        zh = translation.gettext(message) % values
    return {"en": message % values, "zh": zh}


@contextlib.contextmanager
def _charged(session: LabSession, started: float) -> Iterator[None]:
    """Count the check's worker time against its learner, however it ends."""
    try:
        yield
    finally:
        try:
            limits.charge_check_time(int(session.user_id), time.monotonic() - started)
        except Exception:  # Redis away: the verdict matters more than the account
            log.warning("session %s: check time not counted", session.id, exc_info=True)


def libvirt_alive(hv: Hypervisor) -> bool:
    """One cheap call to libvirtd: on a connection whose daemon died it fails at once."""
    try:
        hv.conn.getLibVersion()
        return bool(hv.conn.isAlive())
    except Exception:  # libvirtError: the daemon is gone
        return False


def _check(hv: Hypervisor, session: LabSession, lab: Lab, step_number: int, claim: str) -> None:
    session_id = session.id
    step = lab.step(step_number)
    vm = hv.vm(session.vm_id)
    vm.wait_ready(30)  # cheap when the agent is up; waits out a reconnect after a revert
    result = verify.run_check(vm, step, max_output=limits.check_output_max_bytes())
    details = [{"ok": r.ok, "en": r.message.en, "zh": r.message.zh, "detail": r.detail,
                "trusts_guest": r.trusts_guest} for r in result.results]  # fmt: skip
    stored = StepResult.objects.create(
        session=session, step=step_number, passed=result.passed, duration_s=result.duration_s,
        message="" if result.passed else "; ".join(r.message.en for r in result.results if not r.ok),
        details=details,
    )  # fmt: skip
    limits.prune_step_results(session_id, step_number)
    failed = [r.message for r in result.results if not r.ok]
    reason = {"en": marks.check_reason([m.en for m in failed]), "zh": marks.check_reason([m.zh for m in failed])}
    marks.mark(session_id, "check", step=step_number, ok=result.passed, reason=reason)
    if not result.passed:
        limits.release_check(session_id, claim)
        push_session(session_id)
        return
    if step_number == len(lab.steps):
        limits.release_check(session_id, claim)
        end_here(session_id, S.COMPLETED)
        return
    following = step_number + 1
    verify.run_setup(vm, lab.step(following))
    checkpoints = sorted(session.checkpoints)
    over_budget = _checkpoint(vm, following)
    if over_budget is None:
        marks.mark(session_id, "checkpoint", step=following)
        checkpoints = sorted({*checkpoints, following})
    else:
        # The learner reads why on the verdict: a note in both languages, not an assertion.
        note = _in_both_languages(NO_MORE_CHECKPOINTS, used=over_budget[0], budget=over_budget[1])
        details.append({"ok": True, "note": True, **note, "detail": "", "trusts_guest": False})
        StepResult.objects.filter(pk=stored.pk).update(details=details)
    limits.release_check(session_id, claim)
    update_fields(
        session_id, expected=[S.READY], current_step=following, checkpoints=checkpoints,
        last_activity=timezone.now(),
    )  # fmt: skip


def disk_used_mib(vm: VM) -> int:
    """What the session's disks take on the host, its internal checkpoints included (libvirt's
    allocation, read from the host side: nothing the guest reports)."""
    return sum(info.allocation for info in vm.block_info()) // (1024 * 1024)


def _checkpoint(vm: VM, step: int) -> tuple[int, int] | None:
    """Take `step`'s checkpoint; past the session's disk budget, take none and return (used, budget) MiB.

    The budget is enforced at admission and here: a checkpoint adds ~75 MiB, so a session that
    passes step after step (or fills its disk) would otherwise outgrow what placement counted."""
    used, budget = disk_used_mib(vm), limits.disk_per_session_mib()
    if used >= budget:
        log.warning("session %s: disks use %d MiB of its %d MiB budget: no checkpoint of step %d",
                    vm.session_id, used, budget, step)  # fmt: skip
        return used, budget
    # A checkpoint from an earlier pass (before a goto) is stale: replace it.
    with contextlib.suppress(HypervisorError):
        vm.delete_snapshot(checkpoint(step))
    vm.snapshot(checkpoint(step))
    return None


def revert(session_id: str, step: int) -> None:
    """resetting → ready: back to the checkpoint of `step`; later steps' results and checkpoints go."""
    session = LabSession.objects.get(pk=session_id)
    if session.state != S.RESETTING:
        return
    with hypervisor() as hv:  # HostUnreachable: the task retries, the session still resetting
        try:
            vm = hv.vm(session.vm_id)
            if checkpoint(step) in vm.list_snapshots():
                vm.revert(checkpoint(step), agent_timeout_s=BOOT_TIMEOUT_S)
                for later in (n for n in session.checkpoints if n > step):
                    with contextlib.suppress(HypervisorError):
                        vm.delete_snapshot(checkpoint(later))
            else:  # a clone's step 1 is its template: cloned again (later snapshots go with the VM)
                vm = hv.reclone(vm, settings.GUEST_IMAGE_DIR, BOOT_TIMEOUT_S)
            marks.mark(session_id, "revert", step=step)
            vm.wait_ready(BOOT_TIMEOUT_S)  # the agent reconnects a moment after a revert
            console_relay.size_again(session_id)
        except HostUnreachable:
            # Still resetting: the task's retry reverts again once libvirt is back (idempotent).
            log.warning("session %s: libvirt went away during the revert; retrying", session_id)
            raise
        except HypervisorError as exc:
            if not libvirt_alive(hv):
                raise HostUnreachable(f"libvirt connection lost during the revert: {exc}") from exc
            log.exception("session %s: revert failed", session_id)
            end_here(session_id, S.FAILED, error=CHECKPOINT_NOT_RESTORED)
            return
    with transaction.atomic():
        StepResult.objects.filter(session_id=session_id, step__gte=step).delete()
        transition(
            session_id, S.READY, expected=[S.RESETTING], current_step=step,
            checkpoints=[n for n in session.checkpoints if n <= step], last_activity=timezone.now(),
        )  # fmt: skip


def destroy(session_id: str) -> None:
    """Destroy the session's VM (idempotent) and record `destroyed`."""
    session = LabSession.objects.get(pk=session_id)
    if session.vm_id:
        with hypervisor() as hv, contextlib.suppress(DomainMissing):
            hv.vm(session.vm_id).destroy()
    PoolVM.objects.filter(session_id=session_id).delete()
    transition(session_id, S.DESTROYED)
    # The terminal's scrollback and queued keystrokes go now, not when their TTL runs out.
    host_registry.redis_client().delete(*session_keys(session_id))
