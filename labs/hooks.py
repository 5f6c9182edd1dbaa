"""Hooks other apps register in settings so that labs calls them without importing them.

Labs never imports the apps built on it (tests/test_architecture.py); an app that needs a say in a
session (the classes app: who may observe a seat, where a seat's changes go, which messages a
learner's page replays) names its functions in settings, loaded here by dotted path:

- `LABS_OBSERVER_RULES`: `rule(user) -> QuerySet[LabSession]`, sessions the user may observe
  read-only (on top of their own, and staff's every session);
- `LABS_SESSION_LISTENERS`: `listener(session, payload)`, called after each push of a session's
  row (`payload` is what the page got);
- `LABS_SESSION_GREETERS`: `greeter(session) -> list[dict]`, extra frames an events socket sends
  when it opens (e.g. the messages a learner was sent, so a reload still shows them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string


@functools.cache
def _load(paths: tuple[str, ...]) -> tuple[Callable[..., Any], ...]:
    return tuple(import_string(path) for path in paths)


def hooks(setting: str) -> tuple[Callable[..., Any], ...]:
    """The functions a LABS_* hook setting names (a list of dotted paths; none if unset)."""
    return _load(tuple(getattr(settings, setting, ())))
