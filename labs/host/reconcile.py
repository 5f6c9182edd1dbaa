"""Reconciling one host: make its libvirt and the DB agree (on its agent, with its own connection).

Expiry and placement need only the DB: they run on the web queue (labs/services/expiry.py,
labs/services/placement.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import current_app
from django.utils import timezone

from labs import task_calls
from labs.host import templates
from labs.host.console_relay import release_input
from labs.host.vmwork import checkpoint, end_here, hypervisor
from labs.hypervisor import DomainMissing, HypervisorError
from labs.models import LabSession, PoolVM, Reservation, id_prefixes
from labs.services import limits
from labs.services.transitions import transition, update_fields
from labs.states import ENDED, VM_LIVE, SessionState

S = SessionState
log = logging.getLogger(__name__)
# A VM may be defined a moment after its session turns `provisioning`: don't call it vanished yet.
VANISHED_GRACE = timedelta(seconds=60)
# A session still `requested` after this lost its provision message (Redis lost it, or a web
# process died between commit and send): it is sent again (a duplicate does nothing).
RESEND_AFTER = timedelta(seconds=60)
# When this worker process started (workers import this module before they consume): work on
# this host older than that was interrupted by a previous run, never taken by this one.
PROCESS_STARTED = datetime.fromtimestamp(time.time(), tz=UTC)


def fail_interrupted(host: str, cutoff: datetime) -> list[str]:
    """Sessions mid-task on `host` since before `cutoff` (their worker died): failed; the reaper takes the VM."""
    PoolVM.objects.filter(host=host, state=PoolVM.State.BOOTING, created_at__lt=cutoff).delete()
    stuck = LabSession.objects.filter(
        host=host, state__in=[S.PROVISIONING, S.RESETTING], updated_at__lt=cutoff
    ).values_list("id", flat=True)
    message = "The lab's host restarted while it was being prepared. Please start it again."
    return [sid for sid in stuck if end_here(sid, S.FAILED, error=message)]


def finish_checkpoints(host: str, cutoff: datetime) -> list[str]:
    """Ready sessions whose first checkpoint was being taken when their worker died (the session
    was ready, the checkpoint not recorded): take it (or record the one taken) and let the learner
    type again; the relay held their keystrokes back, so the VM is still as step 1 began. Also
    releases the input of ready sessions whose checkpoint exists (a release lost to Redis)."""
    ready = LabSession.objects.filter(host=host, state=S.READY, updated_at__lt=cutoff)
    pending = [s for s in ready if s.current_step not in s.checkpoints]
    finished = []
    if pending:
        with hypervisor() as hv:
            for session in pending:
                name = checkpoint(session.current_step)
                try:
                    vm = hv.vm(session.vm_id)
                    if name not in vm.list_snapshots():
                        vm.snapshot(name)
                except HypervisorError:  # the VM is gone: reconcile_host fails the session
                    log.exception("session %s: cannot take checkpoint %s", session.id, name)
                    continue
                taken = sorted({*session.checkpoints, session.current_step})
                if update_fields(session.id, expected=[S.READY], checkpoints=taken):
                    release_input(session.id)
                    finished.append(session.id)
    # A hold whose release was lost (Redis away at that moment) must not outlive its checkpoint.
    for session in ready:
        if session.current_step in session.checkpoints:
            release_input(session.id)
    return finished


def resend_requested(host: str, cutoff: datetime) -> list[str]:
    """Send the provision task again for sessions placed on this host before `cutoff` and never
    started (their message was lost): this agent is alive, so it takes them now."""
    resent = []
    for session_id in LabSession.objects.filter(host=host, state=S.REQUESTED, updated_at__lt=cutoff).values_list(
        "id", flat=True
    ):
        if update_fields(session_id, expected=[S.REQUESTED]):  # at most once per RESEND_AFTER
            task_calls.provision_session.on(host, session_id)
            resent.append(session_id)
    return resent


def redeliver_interrupted(host: str, queues: Iterable[str]) -> list[str]:
    """Put back on this host's queues the tasks a killed run of this worker had taken and not
    finished: acknowledged late, they would otherwise wait for the broker's visibility timeout
    (an hour). Only this host's workers consume its queues, so a message taken from one before
    this process started belongs to a dead run. Tasks are idempotent: a redelivered start of a
    session that recovery failed does nothing; an interrupted check runs again and reports."""
    own = task_calls.host_queue(host)
    mine = {q for q in queues if q == own or q.startswith(own + ".")}
    redelivered: list[str] = []
    try:
        with current_app.connection_for_write() as conn:
            channel = conn.default_channel
            if mine and hasattr(channel, "unacked_key"):  # other brokers redeliver by themselves
                redelivered = _restore_unacked(channel, mine, PROCESS_STARTED.timestamp())
    except Exception:  # the broker is away: the visibility timeout still redelivers, later
        log.exception("%s: redelivering interrupted tasks failed", host)
    if redelivered:
        log.warning("%s: redelivered tasks interrupted by a previous run: %s", host, redelivered)
    return redelivered


def _restore_unacked(channel: Any, queues: set[str], before: float) -> list[str]:
    """kombu's Redis transport keeps each unacknowledged message in a hash (with its queue) and
    when it was taken in a sorted set; restore_by_tag puts one back on its queue."""
    client, restored = channel.client, []
    for tag, raw in client.hgetall(channel.unacked_key).items():
        try:
            message, _exchange, routing_key = json.loads(raw)
        except ValueError:
            continue
        taken_at = client.zscore(channel.unacked_index_key, tag)
        if routing_key in queues and taken_at is not None and taken_at < before:
            channel.qos.restore_by_tag(tag, client)
            restored.append(str(message.get("headers", {}).get("task", tag)))
    return restored


def reconcile_host(host: str) -> dict[str, list[str]]:
    """Compare this host's libvirt domains with the DB and repair both sides."""
    report: dict[str, list[str]] = {"failed": [], "reaped": [], "destroyed": []}
    report["failed"] += fail_interrupted(host, timezone.now() - limits.provision_timeout())
    report["resent"] = resend_requested(host, timezone.now() - RESEND_AFTER)
    report["checkpointed"] = finish_checkpoints(host, timezone.now() - VANISHED_GRACE)
    with hypervisor() as hv:
        tagged = hv.list_tagged()
        active = {d.session_id for d in tagged if d.active}
        # A VM that should be running but is not: the learner's work is gone; say so.
        grace = timezone.now() - VANISHED_GRACE
        for session in LabSession.objects.filter(host=host, state__in=[S.READY], updated_at__lt=grace):
            if session.vm_id not in active and end_here(
                session.id, S.FAILED, error="The lab's VM stopped unexpectedly."
            ):
                report["failed"].append(session.id)
        # A warm or reserved VM that died: dropped (its reservation is refilled below), and what
        # is left of it (a shut-off domain, its disks) goes now rather than after the reap grace.
        for dead in PoolVM.objects.filter(host=host, state=PoolVM.State.READY).exclude(id__in=active):
            with contextlib.suppress(DomainMissing):
                vm = hv.vm(dead.id)
                if vm.is_running():
                    continue  # became ready after the listing above: alive
                vm.destroy()
            dead.delete()
        keep = set(LabSession.objects.filter(host=host, state__in=VM_LIVE).values_list("vm_id", flat=True))
        keep |= set(PoolVM.objects.filter(host=host).exclude(state=PoolVM.State.ASSIGNED).values_list("id", flat=True))
        keep |= templates.reserved_vm_ids(hv)  # being built into a template right now
        # Domains outside this deployment's id namespace are never ours to reap.
        report["reaped"] = hv.reap(keep, grace_s=limits.reap_grace_s(), namespace=id_prefixes())
        # After the reap: a template goes only once no clone's disks are backed by it.
        report["templates_removed"] = templates.reap_stale(hv)
    report["refilled"] = refill_reservations(host)
    # Ended sessions whose teardown was interrupted: their VM is reaped now, record it.
    for session_id in LabSession.objects.filter(host=host, state__in=ENDED - {S.DESTROYED}).values_list(
        "id", flat=True
    ):
        if transition(session_id, S.DESTROYED):
            report["destroyed"].append(session_id)
    PoolVM.objects.filter(host=host, state=PoolVM.State.ASSIGNED, session__state=S.DESTROYED).delete()
    if any(report.values()):
        log.info("reconcile %s: %s", host, report)
    task_calls.fill_pool.on(host)
    return report


def refill_reservations(host: str) -> list[str]:
    """Reservations on this host holding fewer VMs than their size (a seat's VM died and was
    dropped above, or a fill ran out of room) with none being made: fill them again, from the
    same template (fill_reservation clones it)."""
    refilled = []
    for reservation in Reservation.objects.filter(host=host):
        held = reservation.vms.exclude(state=PoolVM.State.ASSIGNED)
        if held.count() < reservation.size and not held.filter(state=PoolVM.State.BOOTING).exists():
            task_calls.fill_reservation.on(host, reservation.pk)
            refilled.append(reservation.key)
    return refilled


def tear_down_host(host: str) -> list[str]:
    """Leave nothing of this deployment running on `host` (the portal is stopping): live sessions
    fail with a message and lose their VM, warm VMs and any orphan of our namespace are destroyed."""
    message = "The lab's host was shut down. Please start the lab again."
    live = LabSession.objects.filter(host=host, state__in=VM_LIVE).values_list("id", flat=True)
    ended = [sid for sid in live if end_here(sid, S.FAILED, error=message)]
    PoolVM.objects.filter(host=host).exclude(state=PoolVM.State.ASSIGNED).delete()
    with hypervisor() as hv:
        reaped = hv.reap(set(), grace_s=0, namespace=id_prefixes())
    log.info("tear down %s: ended %s, destroyed %s", host, ended, reaped)
    return ended + [vm for vm in reaped if vm not in ended]
