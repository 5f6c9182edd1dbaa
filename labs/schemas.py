"""What the API returns and the websockets push, as typed schemas (documented at /api/docs).

A session is one `SessionOut` everywhere: the API's bodies, the events websocket's payloads and
the lab page's initial state are all dumps of it, so they cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from django.utils.translation import gettext
from ninja import Schema
from pydantic import PlainSerializer, WithJsonSchema, field_validator

from labs.states import SessionState

# As Python writes it (2025-01-31T09:15:02.123456+00:00): what the page has always been sent and
# compares (a result's `at` tells a new verdict from the one already shown).
IsoDatetime = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class DetailOut(Schema):
    """A message for the learner: an accepted action ("checking") or why a request was refused."""

    detail: str


class AlreadyRunningOut(DetailOut):
    session: str  # the running session that stands in the way


class AssertionOut(Schema):
    """One assertion of a check: its verdict, the author's message in both languages, what was seen.
    A `note` is no assertion but the host's remark on the verdict (e.g. no checkpoint was taken)."""

    ok: bool
    en: str
    zh: str
    detail: str
    note: bool = False


class StepResultOut(Schema):
    """The latest press of Check on one step."""

    passed: bool
    message: str
    details: list[AssertionOut]
    at: IsoDatetime


class SessionOut(Schema):
    """A lab session as its page renders it."""

    id: str
    lab: str
    state: SessionState
    state_label: str
    current_step: int
    checkpoints: list[int]
    queue_position: int | None
    error: str
    created_at: IsoDatetime | None
    ready_at: IsoDatetime | None
    expires_at: IsoDatetime | None
    results: dict[str, StepResultOut]  # by step number (a JSON key, hence a string), in step order

    @field_validator("error")
    @classmethod
    def _in_readers_language(cls, error: str) -> str:
        # The host stores a message id (labs/host/tasks.py): shown in the reader's language.
        return gettext(error) if error else error


class ValidationIssueOut(Schema):
    """One field of a request that does not match the schema, as django-ninja reports it."""

    type: str
    loc: list[str | int]
    msg: str


class ValidationErrorOut(Schema):
    """422: the request's body (or path) does not match the schema; one issue per field."""

    detail: list[ValidationIssueOut]
