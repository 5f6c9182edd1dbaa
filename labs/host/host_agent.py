"""The Celery host agent: capacity adverts and the console relay, inside the worker of this host.

(Not the QEMU guest agent inside each VM: that is labs/hypervisor/guest_agent.py.)
The worker consumes `host.<name>`. Its main process (not the pool children) starts two daemon
threads when the worker is ready (labs/host/tasks.py connects the signals):
  - the advert loop publishes build_advert() to the host registry every ADVERT_EVERY_S;
  - the relay manager (labs/host/console_relay.py) attaches to the serial console of each ready session.
Each thread opens its own libvirt connection after the pool has forked; a child forked later
inherits only a connection that Hypervisor refuses to use. Tasks in the children connect per task.
Before that, work interrupted by a previous crash of this agent is failed and reconciled.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from labs import host_registry
from labs.host import reconcile
from labs.host.console_relay import RelayManager
from labs.hypervisor import HostCapacity, Hypervisor, HypervisorError, load_image

log = logging.getLogger(__name__)
ADVERT_EVERY_S = 10.0
_stopping = threading.Event()
_started = False


def _probe_image() -> tuple[bool, str, str]:
    """(present, hash, error) of this host's guest image; needs no libvirt."""
    try:
        return True, load_image(settings.GUEST_IMAGE_DIR).image_hash, ""
    except (HypervisorError, OSError) as exc:
        return False, "", str(exc)


def build_advert(hv: Hypervisor | None = None) -> host_registry.HostAdvert:
    """What this host can take: libvirt reachable, accelerator, guest image, memory and VM slots."""
    name, image_dir = settings.VIRTLAB_HOST_NAME, settings.GUEST_IMAGE_DIR
    image_ok, image_hash, image_error = _probe_image()
    try:
        if hv is None:
            with Hypervisor.connect(settings.LIBVIRT_URI) as own:
                cap = own.capacity(image_dir if image_ok else None)
        else:
            cap = hv.capacity(image_dir if image_ok else None)
    except HypervisorError as exc:
        return libvirt_down_advert(str(exc))
    return host_registry.HostAdvert(
        name=name, libvirt_ok=True, accelerator=cap.accelerator,
        accelerator_reason=cap.accelerator_reason or image_error, image_present=image_ok,
        image_dir=str(image_dir), image_hash=cap.image_hash or image_hash, total_mem_mib=cap.total_mem_mib,
        free_mem_mib=cap.free_mem_mib, vm_count=cap.vm_count, max_vms=vm_limit(cap), cpus=cap.cpus,
        max_boots=max(1, cap.cpus * settings.LABS_BOOTS_PER_CPU), disk_free_mib=cap.disk_free_mib,
        kernel_features=list(cap.kernel_features),
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
    while not _stopping.is_set():
        try:
            _advertise_on_one_connection()
        except Exception:  # Redis away: advertise again when it is back
            log.exception("host advert failed")
        _stopping.wait(ADVERT_EVERY_S)


def _advertise_on_one_connection() -> None:
    """Publish adverts until libvirt fails; without a connection, advertise that libvirt is down
    (the agent is alive: /healthz must not say there is none)."""
    try:
        with Hypervisor.connect(settings.LIBVIRT_URI) as hv:
            while not _stopping.is_set():
                advert = build_advert(hv)
                host_registry.publish(advert)
                if not advert.libvirt_ok:
                    return  # reconnect: libvirtd may have restarted
                _stopping.wait(ADVERT_EVERY_S)
    except HypervisorError as exc:
        log.warning("host advert: libvirt unreachable: %s", exc)
        host_registry.publish(libvirt_down_advert(str(exc)))


def _recover() -> None:
    """Fail what a previous run of this agent left half-done, then reconcile libvirt with the DB."""
    started = timezone.now()
    close_old_connections()
    try:
        failed = reconcile.fail_interrupted(settings.VIRTLAB_HOST_NAME, started)
        report = reconcile.reconcile_host(settings.VIRTLAB_HOST_NAME)
        log.info("host agent start: interrupted %s, reconcile %s", failed, report)
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
