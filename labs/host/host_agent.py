"""The Celery host agent: capacity adverts and the console relay, inside the worker of this host.

(Not the QEMU guest agent inside each VM: that is labs/hypervisor/guest_agent.py.)
The worker consumes `host.<name>`. Its main process (not the pool children) starts two daemon
threads when the worker is ready (labs/host/tasks.py connects the signals):
  - the advert loop publishes build_advert() to the host registry every ADVERT_EVERY_S;
  - the relay manager (labs/host/relay_manager.py) attaches to the serial console of each ready session.
Each thread opens its own libvirt connection after the pool has forked; a child forked later
inherits only a connection that Hypervisor refuses to use. Tasks in the children connect per task.
Before that, work interrupted by a previous crash of this agent is failed and reconciled.

At start-up (and whenever its advert loop reconnects to libvirtd) the agent proves that VMs here
run confined (labs/hypervisor/confinement.py). Without confinement it refuses VMs: it advertises
no room, so placement and the warm pool pass it by, and says why in its advert (/healthz, doctor),
unless LABS_ALLOW_UNCONFINED is set. The worker itself keeps running: it may serve other queues.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

from django.conf import settings
from django.db import close_old_connections

from labs import host_registry
from labs.host import reconcile
from labs.host.cpu_hogs import CpuHogs
from labs.host.relay_manager import RelayManager
from labs.host.vmwork import libvirt_alive
from labs.hypervisor import HostCapacity, Hypervisor, HypervisorError, load_image
from labs.hypervisor.confinement import ConfinementState

log = logging.getLogger(__name__)
ADVERT_EVERY_S = 10.0
LIBVIRT_POLL_S = 1.0  # how soon the advert loop notices libvirtd gone, and back
RECHECKING = "libvirtd reconnected: checking confinement again before taking VMs"
_stopping = threading.Event()
_started = False
_cpu_hogs = CpuHogs()  # the advert thread tends it, between adverts
# The last host check: it boots a probe QEMU (~1-2 s), so it runs per connection, not per advert.
_confinement: ConfinementState | None = None


def _probe_image() -> tuple[bool, str, str]:
    """(present, hash, error) of this host's guest image; needs no libvirt."""
    try:
        return True, load_image(settings.GUEST_IMAGE_DIR).image_hash, ""
    except (HypervisorError, OSError) as exc:
        return False, "", str(exc)


def confinement_state(hv: Hypervisor, refresh: bool = False) -> ConfinementState:
    """This host's confinement, checked on first use and again when `refresh` is asked for."""
    global _confinement
    if _confinement is None or refresh:
        _confinement = hv.check_confinement()
        if _confinement.active:
            log.info("host agent %s: %s", settings.VIRTLAB_HOST_NAME, _confinement.summary)
        elif settings.LABS_ALLOW_UNCONFINED:
            log.warning("host agent %s: %s; running VMs anyway (LABS_ALLOW_UNCONFINED)",
                        settings.VIRTLAB_HOST_NAME, _confinement.summary)  # fmt: skip
        else:
            log.error("host agent %s refuses VMs: %s (LABS_ALLOW_UNCONFINED=1 overrides)",
                      settings.VIRTLAB_HOST_NAME, _confinement.summary)  # fmt: skip
    return _confinement


def confinement_advert(state: ConfinementState) -> str:
    """The advert's confinement line: the check's summary and what the agent does about it."""
    if state.active:
        return state.summary
    if settings.LABS_ALLOW_UNCONFINED:
        return f"{state.summary} (running VMs anyway: LABS_ALLOW_UNCONFINED)"
    return f"{state.summary}; refusing VMs (LABS_ALLOW_UNCONFINED=1 overrides)"


def build_advert(hv: Hypervisor | None = None) -> host_registry.HostAdvert:
    """What this host can take: libvirt reachable, accelerator, guest image, memory, VM slots and
    confinement (no slots at all on an unconfined host, unless LABS_ALLOW_UNCONFINED)."""
    image = _probe_image()
    image_dir = settings.GUEST_IMAGE_DIR if image[0] else None
    try:
        if hv is None:
            with Hypervisor.connect(settings.LIBVIRT_URI) as own:
                return _advert(own.capacity(image_dir), confinement_state(own), image)
        return _advert(hv.capacity(image_dir), confinement_state(hv), image)
    except HypervisorError as exc:
        return libvirt_down_advert(str(exc))


def _advert(cap: HostCapacity, confinement: ConfinementState, image: tuple[bool, str, str]) -> host_registry.HostAdvert:
    image_ok, image_hash, image_error = image
    may_run = confinement.active or settings.LABS_ALLOW_UNCONFINED
    return host_registry.HostAdvert(
        name=settings.VIRTLAB_HOST_NAME, libvirt_ok=True, accelerator=cap.accelerator,
        accelerator_reason=cap.accelerator_reason or image_error, image_present=image_ok,
        image_dir=str(settings.GUEST_IMAGE_DIR), image_hash=cap.image_hash or image_hash,
        total_mem_mib=cap.total_mem_mib, free_mem_mib=cap.free_mem_mib, vm_count=cap.vm_count,
        max_vms=vm_limit(cap) if may_run else 0, cpus=cap.cpus,
        max_boots=max(1, cap.cpus * settings.LABS_BOOTS_PER_CPU), disk_free_mib=cap.disk_free_mib,
        kernel_features=list(cap.kernel_features), confined=confinement.active,
        confinement=confinement_advert(confinement),
    )  # fmt: skip


def vm_limit(cap: HostCapacity) -> int:
    """VMs this host may run at once: what memory allows and, under TCG, what its cores keep interactive."""
    per_cpu = settings.LABS_TCG_VMS_PER_CPU
    if cap.accelerator == "tcg" and per_cpu > 0:
        return min(cap.max_vms, cap.cpus * per_cpu)
    return cap.max_vms


def libvirt_down_advert(error: str) -> host_registry.HostAdvert:
    """The agent runs but libvirt does not answer: say so, and still report the guest image truly."""
    image_ok, image_hash, _error = _probe_image()
    return host_registry.HostAdvert(
        name=settings.VIRTLAB_HOST_NAME, libvirt_ok=False, libvirt_error=error, accelerator_reason="libvirt is down",
        image_present=image_ok, image_dir=str(settings.GUEST_IMAGE_DIR), image_hash=image_hash,
    )  # fmt: skip


def _advert_loop() -> None:
    reconnect = False  # start() has just checked confinement
    while not _stopping.is_set():
        wait = LIBVIRT_POLL_S  # libvirt failed: try it again soon, so its return is advertised at once
        try:
            _advertise_on_one_connection(recheck=reconnect)
        except Exception:  # Redis away: advertise again when it is back
            log.exception("host advert failed")
            wait = ADVERT_EVERY_S
        reconnect = True
        _stopping.wait(wait)


def _advertise_on_one_connection(recheck: bool) -> None:
    """Publish adverts until libvirt fails; without a connection, advertise that libvirt is down
    (the agent is alive: /healthz must not say there is none). Between adverts the connection is
    probed every LIBVIRT_POLL_S, so a libvirtd that dies is noticed (and reconnected to) within
    seconds rather than at the next advert and the one after it."""
    try:
        with Hypervisor.connect(settings.LIBVIRT_URI) as hv:
            if recheck:
                # libvirtd is back: say so now, taking no VMs until confinement is proven again
                # (it may have restarted with another qemu.conf; the probe boots a QEMU, seconds
                # under load).
                advert = build_advert(hv)
                if advert.libvirt_ok:
                    host_registry.publish(replace(advert, max_vms=0, confinement=RECHECKING))
                confinement_state(hv, refresh=True)
            while not _stopping.is_set():
                advert = build_advert(hv)
                host_registry.publish(advert)
                if not advert.libvirt_ok:
                    return  # reconnect: libvirtd may have restarted
                for _ in range(round(ADVERT_EVERY_S / LIBVIRT_POLL_S)):
                    if _stopping.wait(LIBVIRT_POLL_S):
                        return
                    _tend_cpu_hogs(hv)
                    if not libvirt_alive(hv):
                        host_registry.publish(libvirt_down_advert("the connection to libvirtd was lost"))
                        return
    except HypervisorError as exc:
        log.warning("host advert: libvirt unreachable: %s", exc)
        host_registry.publish(libvirt_down_advert(str(exc)))


def _tend_cpu_hogs(hv: Hypervisor) -> None:
    try:
        _cpu_hogs.tick(hv, time.monotonic())
    except HypervisorError as exc:  # libvirt going away: the loop notices and reconnects
        log.info("CPU hog check skipped: %s", exc)


def _recover() -> None:
    """Fail what a previous run of this agent left half-done, finish the checkpoints it was taking,
    then reconcile libvirt with the DB."""
    host = settings.VIRTLAB_HOST_NAME
    close_old_connections()
    try:
        # Work older than this process is a previous run's. (Celery dispatches no task before
        # worker_ready returns, so this is also "older than this recovery".)
        failed = reconcile.fail_interrupted(host, reconcile.PROCESS_STARTED)
        checkpointed = reconcile.finish_checkpoints(host, reconcile.PROCESS_STARTED)
        report = reconcile.reconcile_host(host)
        log.info("host agent start: interrupted %s, checkpointed %s, reconcile %s", failed, checkpointed, report)
    except Exception:
        log.exception("host agent start: recovery failed (the periodic reconciler will retry)")


def start() -> None:
    """Start the agent's threads once per worker main process."""
    global _started
    if _started:
        return
    _started = True
    try:
        host_registry.publish(build_advert())  # placement can use this host before the first loop tick
    except Exception:
        log.exception("first host advert failed")
    _recover()
    advert_thread = threading.Thread(target=_advert_loop, name="host-advert", daemon=True)
    relay = RelayManager(settings.VIRTLAB_HOST_NAME, settings.LIBVIRT_URI)
    relay.stopping = _stopping
    relay_thread = threading.Thread(target=relay.run, name="console-relay", daemon=True)
    advert_thread.start()
    relay_thread.start()
    log.info("host agent %s: advert and console relay running", settings.VIRTLAB_HOST_NAME)


def stop() -> None:
    _stopping.set()
