"""Reconciling one host: make its libvirt and the DB agree (on its agent, with its own connection).

Expiry and placement need only the DB: they run on the web queue (labs/services/expiry.py,
labs/services/placement.py).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.utils import timezone

from labs import task_calls
from labs.host.vmwork import end_here, hypervisor
from labs.models import LabSession, PoolVM, id_prefixes
from labs.services import limits
from labs.services.transitions import transition
from labs.states import ENDED, VM_LIVE, SessionState

S = SessionState
log = logging.getLogger(__name__)
# A VM may be defined a moment after its session turns `provisioning`: don't call it vanished yet.
VANISHED_GRACE = timedelta(seconds=60)


def fail_interrupted(host: str, cutoff: datetime) -> list[str]:
    """Sessions mid-task on `host` since before `cutoff` (their worker died): failed; the reaper takes the VM."""
    PoolVM.objects.filter(host=host, state=PoolVM.State.BOOTING, created_at__lt=cutoff).delete()
    stuck = LabSession.objects.filter(
        host=host, state__in=[S.PROVISIONING, S.RESETTING], updated_at__lt=cutoff
    ).values_list("id", flat=True)
    message = "The lab's host restarted while it was being prepared. Please start it again."
    return [sid for sid in stuck if end_here(sid, S.FAILED, error=message)]


def reconcile_host(host: str) -> dict[str, list[str]]:
    """Compare this host's libvirt domains with the DB and repair both sides."""
    report: dict[str, list[str]] = {"failed": [], "reaped": [], "destroyed": []}
    report["failed"] += fail_interrupted(host, timezone.now() - limits.provision_timeout())
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
        PoolVM.objects.filter(host=host, state=PoolVM.State.READY).exclude(id__in=active).delete()
        keep = set(LabSession.objects.filter(host=host, state__in=VM_LIVE).values_list("vm_id", flat=True))
        keep |= set(PoolVM.objects.filter(host=host).exclude(state=PoolVM.State.ASSIGNED).values_list("id", flat=True))
        # Domains outside this deployment's id namespace are never ours to reap.
        report["reaped"] = hv.reap(keep, grace_s=limits.reap_grace_s(), namespace=id_prefixes())
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
