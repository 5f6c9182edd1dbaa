"""Web tasks of classes (declared in classes.task_calls); beat sends tick_classes every 30 s."""

from __future__ import annotations

from celery import shared_task

from classes import lifecycle
from classes.task_calls import tick_classes as tick_call


@shared_task(name=tick_call.name, ignore_result=True)
def tick_classes() -> None:
    lifecycle.tick()
