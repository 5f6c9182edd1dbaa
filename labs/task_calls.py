"""Typed task calls: how the web side and the host side ask each other for work.

Each Celery task is declared here once, by a stub with the task's typed signature; callers use
`task_calls.provision_session.on(host, session_id)` (host tasks, on one of the host's queues:
`host.<name>` for VM lifecycle work, `host.<name>.checks` for step checks) or
`task_calls.place_queued_sessions.send()` (web tasks, on the queue `web`). mypy checks every
call's arguments against the stub, the message goes out only when the caller's transaction
commits, and the implementation registers under the same name (`labs/host/tasks.py`,
`labs/tasks.py`), so the web side never imports the host side to send it work. A test checks
that every declared task is registered, takes the declared arguments, and lands on its queue.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec

from django.db import transaction

from portal.celery import app

P = ParamSpec("P")
WEB_QUEUE = "web"


def host_queue(host_name: str) -> str:
    """The queue a hypervisor host's agent consumes: VM lifecycle work (start, revert, teardown, pool)."""
    return f"host.{host_name}"


def host_checks_queue(host_name: str) -> str:
    """The queue of a host's check worker (a separate process with its own concurrency): step checks
    run over learner-controlled output, so a flood of them must not delay another learner's start."""
    return f"host.{host_name}.checks"


@dataclass(frozen=True)
class TaskCall(Generic[P]):
    """A declared task: its registered name and the signature its implementation must have."""

    name: str
    stub: Callable[..., Any]

    @property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.stub)

    def _send_on_commit(self, queue: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # On commit: the worker must see the rows this transaction wrote (and none if it rolls back).
        transaction.on_commit(lambda: app.send_task(self.name, args=args, kwargs=kwargs, queue=queue))


@dataclass(frozen=True)
class HostTaskCall(TaskCall[P]):
    """A task that runs on one hypervisor host (it needs that host's libvirt), on one of its queues."""

    queue_of: Callable[[str], str] = host_queue

    def queue(self, host: str) -> str:
        """The queue of `host` this task goes to."""
        return self.queue_of(host)

    def on(self, host: str, *args: P.args, **kwargs: P.kwargs) -> None:
        """Run the task on `host` once the current transaction commits."""
        self._send_on_commit(self.queue(host), args, kwargs)


@dataclass(frozen=True)
class WebTaskCall(TaskCall[P]):
    """A task that needs no hypervisor (placement, expiry): any worker on the shared web queue."""

    def send(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Run the task on the web queue once the current transaction commits."""
        self._send_on_commit(WEB_QUEUE, args, kwargs)


def host_task(stub: Callable[P, Any]) -> HostTaskCall[P]:
    """A task for the host agent's queue `host.<name>`."""
    return HostTaskCall(f"labs.host.tasks.{stub.__name__}", stub)


def host_check_task(stub: Callable[P, Any]) -> HostTaskCall[P]:
    """A task for the host's check worker, queue `host.<name>.checks`."""
    return HostTaskCall(f"labs.host.tasks.{stub.__name__}", stub, host_checks_queue)


def web_task(stub: Callable[P, Any]) -> WebTaskCall[P]:
    return WebTaskCall(f"labs.tasks.{stub.__name__}", stub)


# Host tasks (labs/host/tasks.py)


@host_task
def provision_session(session_id: str) -> None:
    """requested → provisioning → ready: boot or take a warm VM, set up step 1, checkpoint it."""


@host_check_task
def check_session_step(session_id: str, step: int, claim: str = "") -> None:
    """Run step `step`'s check on the VM and record the verdict; on a pass, set up the next step.
    `claim` is the session's in-flight check marker (labs.services.limits), released at the verdict."""


@host_task
def revert_session(session_id: str, step: int) -> None:
    """resetting → ready: restore the checkpoint taken when `step` began."""


@host_task
def destroy_session_vm(session_id: str) -> None:
    """Destroy the session's VM and disks (idempotent) and record `destroyed`."""


@host_task
def fill_pool() -> None:
    """Boot warm VMs until the host holds the configured number of each kind."""


@host_task
def prepare_template(lab_slug: str) -> None:
    """Build the lab's template on this host now if it has none (a class will clone its seats from it)."""


@host_task
def fill_reservation(reservation_id: int) -> None:
    """Prepare VMs of the reservation's lab on this host until it holds `size` not yet handed out."""


@host_task
def release_reservation(reservation_id: int) -> None:
    """Destroy the reservation's VMs not handed out and delete it (handed-out ones end with their sessions)."""


@host_task
def reconcile_host() -> None:
    """Make this host's libvirt and the DB agree (orphans reaped, vanished VMs failed)."""


# Web tasks (labs/tasks.py)


@web_task
def place_queued_sessions() -> None:
    """Start queued sessions, oldest first, while hosts have room."""


@web_task
def reconcile_all() -> None:
    """Beat's heartbeat: expire sessions, start queued ones, let each host repair itself."""


@web_task
def purge_timelines() -> None:
    """Beat, hourly: delete session timelines older than LABS_TIMELINE_KEEP_DAYS."""


HOST_TASKS: tuple[HostTaskCall[Any], ...] = (
    provision_session,
    check_session_step,
    revert_session,
    destroy_session_vm,
    fill_pool,
    prepare_template,
    fill_reservation,
    release_reservation,
    reconcile_host,
)
WEB_TASKS: tuple[WebTaskCall[Any], ...] = (place_queued_sessions, reconcile_all, purge_timelines)
