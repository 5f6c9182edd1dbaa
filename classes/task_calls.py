"""Typed calls of the classes app's web tasks (classes/tasks.py), as labs.task_calls declares its own:
the stub's signature is the task's, and the message goes to the `web` queue on commit."""

from __future__ import annotations

from typing import Any

from labs.task_calls import WebTaskCall


def _tick_classes() -> None:
    """Beat, every 30 s: prepare, open, refill and end classes on their schedule."""


tick_classes: WebTaskCall[[]] = WebTaskCall("classes.tasks.tick_classes", _tick_classes)
WEB_TASKS: tuple[WebTaskCall[Any], ...] = (tick_classes,)
