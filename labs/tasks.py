"""Celery tasks: take ids, load rows, call services. VM tasks run on the queue `host.<name>`.

Hypervisor work lives in labs.services.vmwork, imported inside the tasks so that the web tier,
which only enqueues, never loads libvirt.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from labs.services import placement, reconcile


@shared_task(ignore_result=True)
def provision_session(session_id: str) -> None:
    from labs.services import vmwork

    vmwork.provision(session_id)


@shared_task(ignore_result=True)
def check_session_step(session_id: str, step: int) -> None:
    from labs.services import vmwork

    vmwork.check(session_id, step)


@shared_task(ignore_result=True)
def revert_session(session_id: str, step: int) -> None:
    from labs.services import vmwork

    vmwork.revert(session_id, step)


@shared_task(ignore_result=True)
def destroy_session_vm(session_id: str) -> None:
    from labs.services import vmwork

    vmwork.destroy(session_id)


@shared_task(ignore_result=True)
def fill_pool(host: str | None = None) -> None:
    from labs.services import vmwork

    vmwork.fill_pool(host or settings.VIRTLAB_HOST_NAME)


@shared_task(ignore_result=True)
def place_queued_sessions() -> int:
    return placement.place_queued()


@shared_task
def reconcile_host(host: str | None = None) -> dict[str, Any]:
    return reconcile.reconcile_host(host or settings.VIRTLAB_HOST_NAME)


@shared_task(ignore_result=True)
def reconcile_all() -> None:
    """Beat, every ~30 s: expire sessions, start queued ones, then let each host repair itself."""
    from labs import hosts
    from portal.celery import host_queue

    reconcile.expire_sessions()
    placement.place_queued()
    for advert in hosts.list_hosts():
        reconcile_host.apply_async(args=(advert.name,), queue=host_queue(advert.name))
