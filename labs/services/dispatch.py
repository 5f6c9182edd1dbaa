"""Enqueueing Celery tasks after the transaction that motivated them commits."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from portal.celery import host_queue


def on_host(task_name: str, host: str, *args: Any) -> None:
    """Run labs.tasks.<task_name>(*args) on `host`'s agent once the current transaction commits."""

    def send() -> None:
        from labs import tasks

        getattr(tasks, task_name).apply_async(args=args, queue=host_queue(host))

    transaction.on_commit(send)


def on_web(task_name: str, *args: Any) -> None:
    """Run a task that needs no hypervisor (placement, expiry) on the shared `web` queue."""

    def send() -> None:
        from labs import tasks

        getattr(tasks, task_name).apply_async(args=args, queue="web")

    transaction.on_commit(send)
