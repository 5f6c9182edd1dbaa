"""The host's prepared VMs: the warm pool (LABS_POOL_SIZES), the templates cold starts ask for,
and the reservations that hold a class's seats (labs/host/tasks.py calls these).

Every prepared VM is a clone of its lab's template (step 1 set up; that template is its step-1
checkpoint), restored a few at a time; a PoolVM row tracks it from booting to handed out.
"""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings

from labs import host_registry, task_calls
from labs.host import console_relay, templates, verify
from labs.host.vmwork import BOOT_TIMEOUT_S, hypervisor
from labs.hypervisor import DomainMissing, HypervisorError
from labs.hypervisor.clones import Template
from labs.models import PoolVM, Reservation
from labs.services import limits
from labs.services.catalog import require_lab
from labs.services.placement import free_boots, free_slots

log = logging.getLogger(__name__)
# Clones restored at once: a restore is ~1 s, mostly QEMU loading RAM (CPU); 3 kept 2 cores busy.
CLONE_PARALLELISM = 3


def fill_pool(host: str) -> None:
    """Build the templates cold starts asked for, then make warm VMs (clones of their lab's
    template) until this host holds the configured number of each kind (LABS_POOL_SIZES)."""
    with hypervisor() as hv:
        for lab_slug, profile in templates.requested(hv):
            if not _has_room(host):
                return  # a build boots a VM: the next round (reconciler) tries again
            try:
                templates.build_requested(hv, lab_slug, profile)
            except (HypervisorError, verify.StepCommandFailed, TimeoutError, LookupError):
                log.exception("template of %s (%s) could not be built", lab_slug or "a bare boot", profile)
    for target in limits.pool_targets():
        kind = PoolVM.objects.filter(host=host, profile=target.profile, lab_slug=target.lab_slug, reservation=None)
        while kind.exclude(state=PoolVM.State.ASSIGNED).count() < target.size:
            if not _has_room(host) or not _prepare_pool_vm(host, target.profile, target.lab_slug):
                return
    task_calls.place_queued_sessions.send()


def prepare_template(host: str, lab_slug: str) -> None:
    """Have the lab's template built on this host ahead of need (a class's seats are cloned from
    it): asked for as a cold start asks, and built by fill_pool when the host has room for a boot
    (else by a later round; the request stays until it is built)."""
    lab = require_lab(lab_slug)
    with hypervisor() as hv:
        if templates.find(hv, lab.slug, lab.profile) is not None:
            return
        templates.request(hv, lab.slug, lab.profile)
    fill_pool(host)


def fill_reservation(reservation_id: int) -> None:
    """Prepare VMs for a reservation (a class's seats) until it holds `size` not yet handed out.

    The class's admission control budgeted these VMs, so they may take every slot; they still
    wait for a free boot (a boot is CPU-bound: starting more at once slows them all). They are
    clones of the lab's template, restored CLONE_PARALLELISM at a time (~1 s each).
    """
    reservation = Reservation.objects.filter(pk=reservation_id).first()
    while reservation is not None:
        wanted = reservation.size - reservation.vms.exclude(state=PoolVM.State.ASSIGNED).count()
        if wanted <= 0:
            return
        advert = _advert(reservation.host)
        if advert is None or free_slots(advert) < 1 or free_boots(advert) < 1:
            return  # the reconciler's next round tries again
        batch = min(wanted, free_slots(advert), CLONE_PARALLELISM)
        if not _prepare_pool_vms(reservation.host, reservation.profile, reservation.lab_slug, reservation, batch):
            return
        reservation = Reservation.objects.filter(pk=reservation_id).first()  # released meanwhile?


def release_reservation(reservation_id: int) -> None:
    """Destroy the reservation's VMs that no learner took, then delete it."""
    reservation = Reservation.objects.filter(pk=reservation_id).first()
    if reservation is None:
        return
    with hypervisor() as hv:
        for pool_vm in reservation.vms.exclude(state=PoolVM.State.ASSIGNED):
            with contextlib.suppress(DomainMissing):
                hv.vm(pool_vm.id).destroy()
            pool_vm.delete()
    reservation.vms.update(reservation=None)  # handed-out VMs end with their sessions
    reservation.delete()
    task_calls.place_queued_sessions.send()  # its slots are free


def _prepare_pool_vm(host: str, profile: str, lab_slug: str, reservation: Reservation | None = None) -> bool:
    """Make one warm VM (set up for `lab_slug`'s first step when given); False if that failed."""
    return _prepare_pool_vms(host, profile, lab_slug, reservation, 1)


def _prepare_pool_vms(host: str, profile: str, lab_slug: str, reservation: Reservation | None, count: int) -> bool:
    """Make `count` warm VMs as clones of the template of (`lab_slug`, `profile`), building that
    first if this host has none (one boot); False if any failed. A clone of a lab's template has
    step 1 set up already, and that template is its step-1 checkpoint."""
    pool_vms = [
        PoolVM.objects.create(host=host, profile=profile, lab_slug=lab_slug, reservation=reservation)
        for _ in range(count)
    ]
    started = time.monotonic()
    try:
        with hypervisor() as hv:
            template = templates.ensure(hv, lab_slug, profile)
    except (HypervisorError, verify.StepCommandFailed, TimeoutError, LookupError):
        log.exception("warm pool: the template of %s (%s) could not be built", lab_slug or "a bare boot", profile)
        PoolVM.objects.filter(pk__in=[p.pk for p in pool_vms]).delete()
        return False
    outcomes = [False] * count
    try:
        # Threads, each on its own libvirt connection: a restore waits mostly on libvirtd and QEMU.
        with ThreadPoolExecutor(max_workers=min(count, CLONE_PARALLELISM)) as pool:
            outcomes = list(pool.map(lambda p: _restore_pool_vm(p.id, template), pool_vms))
    finally:  # even on an unexpected error: a row left booting would stop its reservation's refills
        for pool_vm, ok in zip(pool_vms, outcomes, strict=True):
            if ok:
                PoolVM.objects.filter(pk=pool_vm.pk, state=PoolVM.State.BOOTING).update(state=PoolVM.State.READY)
            else:
                pool_vm.delete()  # the reaper removes whatever half-made VM is left
    console_relay.wake(host)  # the relay manager holds a ready VM's console from now on
    log.info("warm pool: %d of %d clones of %s ready in %.1fs", sum(outcomes), count, template.key,
             time.monotonic() - started)  # fmt: skip
    return all(outcomes)


def _restore_pool_vm(vm_id: str, template: Template) -> bool:
    """Restore one clone (a lab's template is its step-1 checkpoint: see revert); no DB access here."""
    try:
        with hypervisor() as hv:
            hv.restore_clone(template, vm_id, settings.GUEST_IMAGE_DIR, BOOT_TIMEOUT_S)
    except HypervisorError:
        log.exception("warm pool: restoring %s failed", vm_id)
        return False
    return True


def _advert(host: str) -> host_registry.HostAdvert | None:
    return next((a for a in host_registry.list_hosts() if a.name == host), None)


def _has_room(host: str) -> bool:
    advert = _advert(host)
    # Keep a slot, and a boot where there are several, for learners: the pool fills spare capacity.
    return advert is not None and free_slots(advert) > 1 and free_boots(advert) > min(1, advert.max_boots - 1)
