"""Choosing a host for a VM from the hosts' adverts, and starting queued sessions when room frees."""

from __future__ import annotations

import logging

import redis
from django.db import transaction

from labs import host_registry, task_calls
from labs.models import LabSession, PoolVM
from labs.redis_names import PLACEMENT_LOCK
from labs.services import limits
from labs.services.session_events import push_session
from labs.services.transitions import transition
from labs.states import VM_LIVE, SessionState

log = logging.getLogger(__name__)


def host_load(host: str) -> int:
    """VMs the DB has put on `host`: live sessions plus unassigned warm-pool VMs."""
    sessions = LabSession.objects.filter(host=host, state__in=VM_LIVE).count()
    pool = PoolVM.objects.filter(host=host).exclude(state=PoolVM.State.ASSIGNED).count()
    return sessions + pool


def free_slots(advert: host_registry.HostAdvert) -> int:
    """VMs `advert`'s host can take now: by its VM limit, and by its free disk (each new session
    is budgeted LABS_DISK_PER_SESSION_MIB, and LABS_DISK_RESERVE_MIB stays free so no VM pauses)."""
    cap = advert.max_vms if advert.libvirt_ok and advert.image_present else 0
    if limits.max_vms_per_host():
        cap = min(cap, limits.max_vms_per_host())
    by_vms = cap - host_load(advert.name)
    by_disk = (advert.disk_free_mib - limits.disk_reserve_mib()) // limits.disk_per_session_mib()
    return min(by_vms, by_disk - booting(advert.name))


def booting(host: str) -> int:
    """VMs being made on `host` now: sessions placed there not yet ready, warm-pool VMs booting."""
    sessions = LabSession.objects.filter(host=host, state__in=[SessionState.REQUESTED, SessionState.PROVISIONING])
    return sessions.count() + PoolVM.objects.filter(host=host, state=PoolVM.State.BOOTING).count()


def free_boots(advert: host_registry.HostAdvert) -> int:
    """Boots `advert`'s host can start now without slowing the ones under way (CPU-bound under TCG)."""
    return advert.max_boots - booting(advert.name)


def choose_host() -> str | None:
    """The advertised host with the most free slots (then free memory) that can boot one more VM
    now; None when every host is full or busy booting (the session waits in the queue)."""
    try:
        adverts = host_registry.list_hosts()
    except redis.RedisError:
        log.warning("cannot read host adverts; treating every host as full")
        return None
    scored = [(free_slots(a), a.free_mem_mib, a.name) for a in adverts if free_boots(a) > 0]
    scored = [s for s in scored if s[0] > 0]
    return max(scored)[2] if scored else None


def placement_lock() -> redis.lock.Lock:
    """Serialises placement decisions across web processes so two starts cannot take one slot."""
    return host_registry.redis_client().lock(PLACEMENT_LOCK, timeout=30, blocking_timeout=10)


def claim_pool_vm(session: LabSession, reservation_key: str = "") -> PoolVM | None:
    """Hand a ready warm VM to the session: one prepared for its lab first, else any of its profile.

    With `reservation_key`, only VMs held for that reservation (a class's seats); without it,
    never one of those. A conditional update decides between concurrent starts: one winner per VM.
    """
    ready = PoolVM.objects.filter(
        profile=session.profile, state=PoolVM.State.READY, lab_slug__in=[session.lab_slug, ""]
    )
    if reservation_key:
        ready = ready.filter(reservation__key=reservation_key, lab_slug=session.lab_slug)
    else:
        ready = ready.filter(reservation=None)
    # Prepared VMs first ("" sorts before any slug, so descending puts them ahead), oldest first.
    for pool_vm in ready.order_by("-lab_slug", "created_at"):
        won = PoolVM.objects.filter(pk=pool_vm.pk, state=PoolVM.State.READY).update(
            state=PoolVM.State.ASSIGNED, session=session
        )
        if won:
            return pool_vm
    return None


def place(session: LabSession, reservation_key: str = "") -> bool:
    """Give a queued session a VM slot (its reservation's, else the warm pool's, else a host's);
    False if every host is full."""
    pool_vm = claim_pool_vm(session, reservation_key) if reservation_key else None
    pool_vm = pool_vm or claim_pool_vm(session)
    if pool_vm is not None:
        host, vm_id = pool_vm.host, pool_vm.id
    else:
        chosen = choose_host()
        if chosen is None:
            return False
        host, vm_id = chosen, session.id
    if not transition(session.id, SessionState.REQUESTED, host=host, vm_id=vm_id):
        return False
    task_calls.provision_session.on(host, session.id)
    return True


def place_queued() -> int:
    """Start queued sessions, oldest first, while hosts have room. Returns how many started."""
    started = 0
    with placement_lock():
        for session in LabSession.objects.filter(state=SessionState.QUEUED).order_by("created_at"):
            with transaction.atomic():
                if not place(session):
                    break
            started += 1
    if started:
        # Everyone still waiting moved up the queue: refresh their pages.
        for session_id in LabSession.objects.filter(state=SessionState.QUEUED).values_list("id", flat=True):
            push_session(session_id)
    return started
