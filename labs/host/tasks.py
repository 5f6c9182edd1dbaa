"""Host tasks: the Celery tasks a hypervisor host runs, on its queue `host.<name>` (the host agent:
VM lifecycle) or `host.<name>.checks` (step checks, in a separate worker process on the same host).

Declared in labs.task_calls (names and signatures callers use). Each takes ids, loads rows and
calls labs.host.vmwork. Retry policy is declared here: libvirt away (HostUnreachable) is retried
with backoff before anything changed; once retries run out, `on_failure` fails the session and
tears its VM down on this host. Only workers import this module (CELERY_IMPORTS).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.utils.translation import gettext_noop

from labs import task_calls
from labs.host import host_agent, pool, reconcile, vmwork
from labs.hypervisor import HostUnreachable
from labs.services import limits
from labs.states import SessionState

log = logging.getLogger(__name__)
RETRY_LIBVIRT: dict[str, Any] = {
    "autoretry_for": (HostUnreachable,),
    "retry_backoff": 2,
    "retry_backoff_max": 30,
    "retry_jitter": False,
    "max_retries": 5,
}


class SessionTask(Task):  # type: ignore[type-arg]
    """A task on one session (first argument): a failure it did not handle fails the session.

    The learner reads `failure` (a message id: the page shows it in their language); the
    exception, which may name internal hosts, paths and libvirt's own words, goes to the log only.
    """

    failure = gettext_noop("The lab's host ran into a problem. Please start the lab again.")
    ignore_result = True

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        session_id = args[0] if args else kwargs.get("session_id")
        log.error("%s for session %s failed: %r", self.name, session_id, exc, exc_info=exc)
        if session_id:
            vmwork.end_here(session_id, SessionState.FAILED, error=self.failure)


START_FAILED = gettext_noop("The lab's host could not start your VM. Please start the lab again.")
CHECK_FAILED = gettext_noop("The lab's host could not check this step. Please start the lab again.")
REVERT_FAILED = gettext_noop("The lab's host could not restore the checkpoint. Please start the lab again.")


@shared_task(name=task_calls.provision_session.name, base=SessionTask, failure=START_FAILED, **RETRY_LIBVIRT)
def provision_session(session_id: str) -> None:
    vmwork.provision(session_id)


class CheckTask(SessionTask):
    """A step check: however it ends (verdict, error, retries exhausted), the session's in-flight
    marker is released; a retry keeps it (the check is still pending)."""

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        # (session_id, step, claim), positionally as task_calls sends them, or by name.
        session_id = args[0] if args else kwargs.get("session_id", "")
        claim = args[2] if len(args or ()) > 2 else kwargs.get("claim", "")
        limits.release_check(str(session_id), str(claim))


# A check that arrives before its step's checkpoint retries every 0.25 s for up to 30 s.
@shared_task(
    name=task_calls.check_session_step.name, base=CheckTask, failure=CHECK_FAILED,
    autoretry_for=(vmwork.CheckpointPending, HostUnreachable), max_retries=120,
    retry_kwargs={"countdown": 0.25}, retry_backoff=False,
)  # fmt: skip
def check_session_step(session_id: str, step: int, claim: str = "") -> None:
    vmwork.check(session_id, step, claim)


@shared_task(name=task_calls.revert_session.name, base=SessionTask, failure=REVERT_FAILED, **RETRY_LIBVIRT)
def revert_session(session_id: str, step: int) -> None:
    vmwork.revert(session_id, step)


# Idempotent: retried while libvirt is away; past that the reconciler reaps the VM.
@shared_task(name=task_calls.destroy_session_vm.name, ignore_result=True, **RETRY_LIBVIRT)
def destroy_session_vm(session_id: str) -> None:
    vmwork.destroy(session_id)


@shared_task(name=task_calls.fill_pool.name, ignore_result=True, **RETRY_LIBVIRT)
def fill_pool() -> None:
    pool.fill_pool(settings.VIRTLAB_HOST_NAME)


@shared_task(name=task_calls.prepare_template.name, ignore_result=True, **RETRY_LIBVIRT)
def prepare_template(lab_slug: str) -> None:
    pool.prepare_template(settings.VIRTLAB_HOST_NAME, lab_slug)


@shared_task(name=task_calls.fill_reservation.name, ignore_result=True, **RETRY_LIBVIRT)
def fill_reservation(reservation_id: int) -> None:
    pool.fill_reservation(reservation_id)


@shared_task(name=task_calls.release_reservation.name, ignore_result=True, **RETRY_LIBVIRT)
def release_reservation(reservation_id: int) -> None:
    pool.release_reservation(reservation_id)


@shared_task(name=task_calls.reconcile_host.name, ignore_result=True, **RETRY_LIBVIRT)
def reconcile_host() -> None:
    reconcile.reconcile_host(settings.VIRTLAB_HOST_NAME)


@worker_ready.connect
def _start_host_agent(sender: Any = None, **_kwargs: Any) -> None:
    """A worker consuming this host's queue is its host agent: start the advert and console relay.

    Only that one: the host's check worker (queue `host.<name>.checks` alone) must not start a
    second relay fighting the first for the consoles, nor advertise or recover the host again.
    """
    # The sender is the worker's Consumer; -Q decides which queues it consumes.
    queues = set(sender.app.amqp.queues.consume_from or {}) if sender is not None else set()
    if task_calls.host_queue(settings.VIRTLAB_HOST_NAME) in queues:
        host_agent.start()
    # Every worker of the host (after the agent's recovery) takes back what its killed run left.
    reconcile.redeliver_interrupted(settings.VIRTLAB_HOST_NAME, queues)


@worker_shutdown.connect
def _stop_host_agent(**_kwargs: Any) -> None:
    host_agent.stop()
