"""Web tasks: work that needs only the DB and Redis, on the shared `web` queue.

Declared in labs.task_calls (the names and signatures callers use); host tasks are in
labs/host/tasks.py. Tasks take ids, load rows and call services.
"""

from __future__ import annotations

from celery import shared_task

from labs import host_registry, task_calls
from labs.services import expiry, lost_hosts, placement
from labs.timeline import retention


@shared_task(name=task_calls.place_queued_sessions.name, ignore_result=True)
def place_queued_sessions() -> None:
    placement.place_queued()


@shared_task(name=task_calls.reconcile_all.name, ignore_result=True)
def reconcile_all() -> None:
    """Beat, every ~30 s: expire sessions and those of lost hosts, start queued ones, then let each
    host repair itself."""
    expiry.expire_sessions()
    lost_hosts.end_sessions_on_lost_hosts()
    placement.place_queued()
    for advert in host_registry.list_hosts():
        task_calls.reconcile_host.on(advert.name)


@shared_task(name=task_calls.purge_timelines.name, ignore_result=True)
def purge_timelines() -> None:
    retention.purge_old_timelines()
