"""Schemathesis against /api/openapi.json, in-process over WSGI: whatever a caller sends, the API
answers without a 5xx, with a status its schema documents and a body of the documented shape.

Every operation is exercised as a learner (session cookie and CSRF token, as the page sends them),
as staff, and anonymously, with generated valid and invalid data. Session ids are drawn from what
was generated and from real sessions (the learner's own ready one, another learner's), so the
session endpoints answer from their real paths, not only with 404.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core.wsgi import get_wsgi_application
from django.test import Client
from django.utils.crypto import get_random_string
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from pytest_django import Settings
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET

from labs.models import LabSession
from labs.states import SessionState
from tests.access_matrix import People
from tests.hostile.budget import fuzz_examples

Case = schemathesis.Case[Any]
pytestmark = pytest.mark.django_db
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", get_wsgi_application())
# Bounded for CI: each operation gets this many generated requests per caller (3 callers x 8 operations).
BOUNDED = settings(max_examples=fuzz_examples(), deadline=None, database=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                          HealthCheck.filter_too_much])  # fmt: skip
OWNED, OTHERS = "s-fuzzowned", "s-fuzzothers"  # alice's ready session; bob's


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    """Session ids as generated, or real ones (the caller's own when it is alice, someone else's)."""
    if not path_parameters or "session_id" not in path_parameters:
        return st.just(path_parameters)
    ids = st.sampled_from([path_parameters["session_id"], OWNED, OTHERS])
    return ids.map(lambda session_id: {**path_parameters, "session_id": session_id})


@pytest.fixture
def sessions(session: LabSession, people: People) -> None:
    """Alice's and Bob's ready sessions under ids the hook above draws from."""
    LabSession.objects.filter(pk=session.pk).update(id=OWNED)
    LabSession.objects.create(id=OTHERS, user=people.bob, lab_slug=session.lab_slug, state=SessionState.READY,
                              host=session.host, vm_id="v2", checkpoints=[1], ready_at=session.ready_at,
                              expires_at=session.expires_at)  # fmt: skip


def credentials(user: User) -> dict[str, str]:
    """What a browser holds once `user` logged in: the session cookie and a CSRF token."""
    client = Client()
    client.force_login(user)
    return {"sessionid": client.cookies["sessionid"].value, "csrftoken": get_random_string(32)}


# Who is logged in for the current test (set by its fixture; a schemathesis auth provider reads it).
LOGGED_IN: dict[str, dict[str, str]] = {}


class SessionCookie:
    """The credentials of LOGGED_IN[role], sent as the page sends them: the cookies, and the CSRF token
    again in its header. Declared as auth, so schemathesis also sends each request without it and
    expects a refusal."""

    role = ""

    def get(self, case: Case, context: Any) -> dict[str, str] | None:
        return LOGGED_IN.get(self.role)  # asked while collecting too, before anyone logged in

    def set(self, case: Case, data: dict[str, str], context: Any) -> None:
        case.cookies = {**case.cookies, **data}
        case.headers["X-CSRFToken"] = data["csrftoken"]


class Learner(SessionCookie):
    role = "learner"


class Staff(SessionCookie):
    role = "staff"


@pytest.fixture
def learner(people: People) -> Iterator[None]:
    LOGGED_IN["learner"] = credentials(people.alice)
    yield
    LOGGED_IN.pop("learner")


@pytest.fixture
def staff(people: People) -> Iterator[None]:
    LOGGED_IN["staff"] = credentials(people.charlie)
    yield
    LOGGED_IN.pop("staff")


@schema.auth.apply(Learner, refresh_interval=None)
@schema.parametrize()
@BOUNDED
def test_learner(case: Case, sessions: None, learner: None) -> None:
    case.call_and_validate()


@schema.auth.apply(Staff, refresh_interval=None)
@schema.parametrize()
@BOUNDED
def test_staff(case: Case, sessions: None, staff: None) -> None:
    case.call_and_validate()


@schema.parametrize()
@BOUNDED
def test_anonymous(case: Case, sessions: None) -> None:
    case.call_and_validate()


# Refusals that random requests hardly ever reach (a second check while one runs, a full queue, a
# rate spent): made on purpose, and held to the schema like the generated ones.
REFUSALS = [
    pytest.param("learner", "/api/sessions/{session_id}/check", {"step": 1}, [202, 429], {}, id="check-in-flight"),
    pytest.param("learner", "/api/sessions/{session_id}/check", {"step": 1}, [429], {"LABS_CHECK_RATE": 0},
                 id="check-rate"),
    pytest.param("learner", "/api/sessions/{session_id}/check", {"step": 2}, [409], {}, id="check-other-step"),
    pytest.param("learner", "/api/sessions/{session_id}/goto", {"step": 2}, [409], {}, id="goto-no-checkpoint"),
    pytest.param("learner", "/api/sessions", {"lab": "relay-check"}, [409], {}, id="start-already-running"),
    pytest.param("learner", "/api/sessions", {"lab": "no-such-lab"}, [404], {}, id="start-unknown-lab"),
    # Every host full (its disk reserve leaves no room) and no start may wait.
    pytest.param("staff", "/api/sessions", {"lab": "relay-check"}, [503],
                 {"LABS_MAX_QUEUED": 0, "LABS_DISK_RESERVE_MIB": 10**9}, id="queue-full"),
    pytest.param("staff", "/api/sessions", {"lab": "relay-check"}, [429], {"LABS_START_RATE": 0}, id="start-rate"),
    pytest.param("staff", "/api/sessions/{session_id}/stop", None, [403], {}, id="staff-observes"),
]  # fmt: skip


@pytest.mark.parametrize(("who", "path", "body", "statuses", "overrides"), REFUSALS)
def test_refusals_match_the_schema(who: str, path: str, body: dict[str, Any] | None, statuses: list[int],
                                   overrides: dict[str, int], sessions: None, learner: None, staff: None,
                                   settings: Settings) -> None:  # fmt: skip
    for name, value in overrides.items():
        setattr(settings, name, value)
    operation = schema[path]["POST"]
    for status in statuses:
        credentials = LOGGED_IN[who]
        case = operation.Case(
            path_parameters={"session_id": OWNED} if "{session_id}" in path else None,
            body=body if body is not None else NOT_SET,
            cookies=dict(credentials),
            headers={"X-CSRFToken": credentials["csrftoken"]},
        )
        response = case.call()
        assert response.status_code == status, response.text
        # A full queue is a 503 on purpose (every host busy, try later), documented as such.
        case.validate_response(response, excluded_checks=[not_a_server_error] if status == 503 else [])
