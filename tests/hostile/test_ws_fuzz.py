"""Every websocket consumer, fuzzed: random and adversarial frames never raise, a malformed frame is
answered (an error or notice, or a 4xxx close), and the socket still works afterwards.

Driven in-process through portal.asgi.application (Origin check, auth, router, consumer) with
asgiref's ApplicationCommunicator, as the owner (who drives the session) and staff (who observe).
The consumers are listed from the websocket router: a new one is fuzzed without being named here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from channels.layers import get_channel_layer
from django.utils import timezone
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from classes.live import class_group
from classes.models import LabClass
from labs.models import LabSession
from labs.redis_names import events_group, terminal_group
from portal.asgi import application
from tests.access_matrix import People, websocket_routes
from tests.asgi_sockets import headers_for
from tests.hostile.budget import fuzz_examples

pytestmark = pytest.mark.django_db(transaction=True)  # the consumers read the DB from their own thread

ROUTES = sorted(websocket_routes())
FUZZ_CLASS = 4242  # the class whose grid the fuzzer opens
FRAME_LIMIT = 64 * 1024  # LABS_WS_MAX_FRAME_BYTES: one paste; uvicorn refuses larger frames
# A frame is text (a str, as ASGI hands it over: valid UTF-8 already) or binary.
Frame = tuple[Literal["text"], str] | tuple[Literal["bytes"], bytes]
FUZZ = settings(max_examples=fuzz_examples(), deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])  # fmt: skip


# --- Frames ---------------------------------------------------------------------------------------

huge_ints = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**1024), max_value=2**1024),
    st.sampled_from([2**31, 2**63, -(2**63), 10**400, 0, -1, 1_000_000_000]),
)
scalars = st.one_of(
    st.none(), st.booleans(), huge_ints, st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16,
)
# Long runs of one character, up to and past the frame limit (generating them char by char is slow).
long_text = st.builds(lambda c, n: c * n, st.characters(codec="utf-8"), st.integers(1_000, FRAME_LIMIT + 2_000))
long_bytes = st.builds(lambda b, n: bytes([b]) * n, st.integers(0, 255), st.integers(1_000, FRAME_LIMIT + 2_000))
# What browsers cannot send but a hand-written client can: invalid UTF-8 in binary frames (text frames
# arrive decoded), lone surrogates as JSON escapes, nesting past the parser's depth.
invalid_utf8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80" * 100])
surrogate_input = st.integers(0xD800, 0xDFFF).map(lambda c: f'{{"type": "input", "data": "\\u{c:04x}"}}')
deep_nesting = st.integers(1_000, 60_000).map(lambda n: "[" * n + "]" * n)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


def message(kind: st.SearchStrategy[Any], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    """A JSON object with this "type" and any of these fields."""
    return st.fixed_dictionaries({"type": kind}, optional=fields).map(dumps)


# Each of these is wrong for every consumer (a terminal's text must name input, input_b64 or resize
# with the right data; the events socket takes nothing at all).
malformed_text = st.one_of(
    st.text(min_size=1, max_size=200).filter(lambda t: not _is_json(t)),
    st.one_of(st.lists(json_values, max_size=4), scalars).map(dumps),  # JSON, not an object
    st.dictionaries(st.text(max_size=8).filter(lambda k: k != "type"), json_values, max_size=4).map(dumps),
    message(json_values.filter(lambda v: not isinstance(v, str))),  # "type" not a string
    message(st.text(max_size=40).filter(lambda t: t not in {"input", "input_b64", "resize"}), data=json_values),
    message(st.just("input"), data=json_values.filter(lambda v: not isinstance(v, str))),
    message(st.just("input_b64"), data=st.text(min_size=1, max_size=80).filter(lambda t: not _is_base64(t))),
    message(st.just("input_b64"), data=json_values.filter(lambda v: not isinstance(v, str))),
    message(st.just("resize"), cols=json_values | huge_ints, rows=json_values | huge_ints).filter(
        lambda t: not _valid_resize(json.loads(t))
    ),
    surrogate_input,
    deep_nesting,
    long_text.filter(lambda t: len(t.encode()) > FRAME_LIMIT),
)
oversized_bytes = long_bytes.filter(lambda b: len(b) > FRAME_LIMIT)
any_text = st.one_of(
    malformed_text,
    message(st.just("input"), data=st.text(max_size=200) | long_text),
    message(st.just("input_b64"), data=st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode())),
    message(st.just("resize"), cols=st.integers(2, 1000), rows=st.integers(1, 500)),
    long_text,
)
any_bytes = st.one_of(st.binary(max_size=300), invalid_utf8, long_bytes)
frames: st.SearchStrategy[list[Frame]] = st.lists(
    st.one_of(any_text.map(lambda t: ("text", t)), any_bytes.map(lambda b: ("bytes", b))), min_size=1, max_size=6
)
malformed_frames: st.SearchStrategy[Frame] = st.one_of(
    malformed_text.map(lambda t: ("text", t)), oversized_bytes.map(lambda b: ("bytes", b))
)


def _valid_resize(message: dict[str, Any]) -> bool:
    cols, rows = message.get("cols"), message.get("rows")
    return type(cols) is int and type(rows) is int and 2 <= cols <= 1000 and 1 <= rows <= 500


# --- A conversation with one socket ----------------------------------------------------------------


@dataclass
class Conversation:
    """What one socket said back: its frames, its close code (0 while open), errors logged meanwhile."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    close_code: int = 0

    def answers(self) -> list[dict[str, Any]]:
        """The error and notice messages among the text frames (the page shows these to the learner)."""
        found = []
        for frame in self.sent:
            if frame.get("text") is None:
                continue
            body = json.loads(frame["text"])
            if isinstance(body, dict) and body.get("type") in {"error", "notice"}:
                found.append(body)
        return found


class LoggedErrors(logging.Handler):
    """Every record at ERROR or above, from any logger (a consumer's traceback, asyncio's
    "Task exception was never retrieved")."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged_errors() -> Iterator[LoggedErrors]:
    handler = LoggedErrors()
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)


def path_for(route: str, session_id: str) -> str:
    """The route with the session filled in; a route with other parameters needs teaching here."""
    path = re.sub(r"<(?:\w+:)?session_id>", session_id, route)
    path = re.sub(r"<(?:\w+:)?class_id>", str(FUZZ_CLASS), path)
    assert "<" not in path, f"the fuzzer does not know how to fill {route!r}"
    return "/" + path


# A channel-layer event per consumer that it must pass on to its client: proof, after the frames,
# that the consumer still runs and serves its group.
MARK = b"fuzz-probe-7f3a"
PROBES: dict[str, tuple[Any, dict[str, Any]]] = {
    "ws/sessions/<slug:session_id>/events/": (
        events_group, {"type": "session.event", "session": {"id": MARK.decode()}}
    ),
    "ws/sessions/<slug:session_id>/terminal/": (
        terminal_group, {"type": "term.output", "data": MARK, "offset": 10**12}
    ),
    "ws/classes/<int:class_id>/live/": (
        lambda _session_id: class_group(FUZZ_CLASS), {"type": "class.seat", "row": {"user": MARK.decode()}}
    ),
}  # fmt: skip


def _probe_seen(frame: dict[str, Any]) -> bool:
    return MARK in (frame.get("bytes") or b"") or MARK.decode() in (frame.get("text") or "")


async def _next(app: ApplicationCommunicator, timeout: float) -> dict[str, Any] | None:
    """The app's next message, or None after `timeout` (the app left running; its own exception
    raised if it died)."""
    try:
        async with asyncio.timeout(timeout):
            return dict(await app.output_queue.get())
    except TimeoutError:
        if app.future.done():
            app.future.result()
        return None


def converse(route: str, session: LabSession, headers: list[tuple[bytes, bytes]], sent: list[Frame],
             until: Literal["answer", "probe"]) -> Conversation:  # fmt: skip
    """Open the socket, send `sent`, then read until an answer (error, notice or close) or until the
    probe comes back; disconnect as a server would. Whatever the app raised is raised here."""
    said = Conversation()

    async def scenario() -> None:
        scope = {"type": "websocket", "path": path_for(route, session.id), "query_string": b"", "headers": headers,
                 "subprotocols": []}  # fmt: skip
        app = ApplicationCommunicator(application, scope)
        try:
            await app.send_input({"type": "websocket.connect"})
            opened = await _next(app, 10)
            assert opened is not None, "no answer to connect"
            assert opened["type"] == "websocket.accept", opened
            greeting = await _next(app, 10)  # sent once the consumer has joined its groups
            assert greeting is not None, "no greeting after accept"
            assert greeting["type"] == "websocket.send", greeting
            for kind, data in sent:
                await app.send_input({"type": "websocket.receive", kind: data})
            if until == "probe":
                group, event = PROBES[route]
                layer = get_channel_layer()
                assert layer is not None
                await layer.group_send(group(session.id), event)
            while True:
                out = await _next(app, 5)
                if out is None:
                    break
                if out["type"] == "websocket.close":
                    said.close_code = int(out.get("code", 1000))
                    break
                said.sent.append(out)
                if (until == "answer" and said.answers()) or (until == "probe" and _probe_seen(out)):
                    break
        finally:
            if not app.future.done():
                await app.send_input({"type": "websocket.disconnect", "code": 1000})
            await app.wait(10)  # raises what the consumer raised, if it did

    async_to_sync(scenario)()
    return said


@pytest.fixture
def observed(session: LabSession, people: People) -> dict[str, list[tuple[bytes, bytes]]]:
    """The headers of the owner (drives) and of staff (observe): the two who get a socket at all.
    For a class's grid: the owner teaches the class (FUZZ_CLASS), staff assists."""
    now = timezone.now()
    klass = LabClass.objects.create(pk=FUZZ_CLASS, title="Fuzz", owner=people.alice, labs=[session.lab_slug],
                                    seats=1, starts_at=now, ends_at=now + timedelta(hours=1))  # fmt: skip
    klass.co_instructors.add(people.charlie)
    return {"owner": headers_for(people.alice), "staff": headers_for(people.charlie)}


def test_every_consumer_has_a_probe() -> None:
    assert set(ROUTES) == set(PROBES), "teach the fuzzer an event that each consumer passes on"


# --- The properties -------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["owner", "staff"])
@pytest.mark.parametrize("route", ROUTES)
@FUZZ
@given(sent=frames)
@example(sent=[("text", "[]")])
@example(sent=[("text", '{"type": "input_b64", "data": "%%%"}')])
@example(sent=[("text", '{"type": "input", "data": "\\ud800"}')])
@example(sent=[("text", '{"type": "resize", "cols": 1e400, "rows": -1}')])
@example(sent=[("bytes", b"\xff\xfe" * 40_000)])
def test_no_frame_breaks_a_consumer(route: str, who: str, sent: list[Frame], session: LabSession,
                                    observed: dict[str, list[tuple[bytes, bytes]]],
                                    logged_errors: LoggedErrors) -> None:  # fmt: skip
    logged_errors.records.clear()
    said = converse(route, session, observed[who], sent, until="probe")
    assert said.close_code == 0 or 4000 <= said.close_code < 5000, said.close_code
    if said.close_code == 0:
        assert any(_probe_seen(f) for f in said.sent), "after these frames the socket no longer serves its group"
    assert [r.getMessage() for r in logged_errors.records] == []


@pytest.mark.parametrize("who", ["owner", "staff"])
@pytest.mark.parametrize("route", ROUTES)
@FUZZ
@given(frame=malformed_frames)
@example(frame=("text", "[]"))
@example(frame=("text", "null"))
@example(frame=("text", '{"type": "input_b64", "data": "not base64!"}'))
@example(frame=("text", '{"type": "input", "data": "\\udfff"}'))
@example(frame=("text", '{"type": "resize", "cols": 99999999999999999999, "rows": 24}'))
@example(frame=("bytes", b"x" * (FRAME_LIMIT + 1)))
def test_a_malformed_frame_is_answered(route: str, who: str, frame: Frame, session: LabSession,
                                       observed: dict[str, list[tuple[bytes, bytes]]]) -> None:  # fmt: skip
    said = converse(route, session, observed[who], [frame], until="answer")
    assert said.answers() or 4000 <= said.close_code < 5000, f"no error, notice or 4xxx close: {said}"
    for answer in said.answers():
        assert isinstance(answer.get("message"), str), answer
        assert answer["message"], answer
