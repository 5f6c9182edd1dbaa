"""The one Celery app. Configuration comes from Django settings under the CELERY_ namespace."""

from __future__ import annotations

import os
import sys
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("virtlab")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def host_queue(host_name: str) -> str:
    """The queue a hypervisor host's agent consumes."""
    return f"host.{host_name}"


# The reconciler: expiry, queued starts, and each host's libvirt-vs-DB repair.
app.conf.beat_schedule = {
    "labs-reconcile": {"task": "labs.tasks.reconcile_all", "schedule": 30.0, "options": {"queue": "web"}},
}


@worker_ready.connect
def _start_host_agent(sender: Any = None, **_kwargs: Any) -> None:
    """A worker consuming this host's queue is its host agent: start the advert and console relay."""
    from django.conf import settings

    # The sender is the worker's Consumer; -Q decides which queues it consumes.
    queues = set(sender.app.amqp.queues.consume_from or {}) if sender is not None else set()
    if host_queue(settings.VIRTLAB_HOST_NAME) in queues:
        from labs import agent

        agent.start()


@worker_shutdown.connect
def _stop_host_agent(**_kwargs: Any) -> None:
    agent = sys.modules.get("labs.agent")  # only a host agent loaded it
    if agent is not None:
        agent.stop()
