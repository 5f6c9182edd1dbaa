"""Every page, API route and websocket the project serves, and every caller, in one table (MATRIX):
what the owner of a session (alice), another learner (bob), staff (charlie) and an anonymous visitor
get from each. A route no row reaches fails the test, so a new route must say who may use it.
"""

from __future__ import annotations

import gzip
import json
import time
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone
from pytest_django import Settings

from classes.models import LabClass
from labs.models import LabSession, PoolVM
from labs.timeline import cast
from labs.timeline.models import SessionTimeline
from tests import access_matrix
from tests.access_matrix import (
    WHO,
    People,
    Who,
    api_operations,
    build_content,
    client_for,
    matrix_cells,
    url_route_of,
    url_routes,
    websocket_route_of,
    websocket_routes,
    write_doc,
)
from tests.asgi_sockets import Socket, headers_for, run
from tests.conftest import make_user

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
# The lab world (private Redis, test lab, advertised host), staff, and alice's ready session.
shared_redis, lab_world = access_matrix.shared_redis, access_matrix.lab_world
charlie, people, session = access_matrix.charlie, access_matrix.people, access_matrix.session
fast_passwords = access_matrix.fast_passwords  # autouse
# A transactional DB: the consumers read it from their own thread.
websocket_db = pytest.mark.django_db(transaction=True)


# --- Every route, every caller: the matrix ------------------------------------------------------------
#
# One row per route the project serves and method: the request made, then the status the owner of a
# session (alice), another learner (bob), staff (charlie) and an anonymous visitor get. A row names
# its route by a path that reaches it; test_every_route_is_in_the_matrix resolves every path and
# fails on a route (from the URL resolver, the OpenAPI document or the websocket router) that no
# row reaches. {session} is alice's ready session, {lab} the test lab, {doc} a built doc page,
# {user} alice's user id, {group} and {pool} a group and a pool VM. 302 sends a visitor to a log-in
# page (a logged-in user away from a page for visitors; after a log-out, home); 400 an invalid
# link; 403 staff without the model permission; 503 a degraded /healthz (no worker answers here).
# A websocket row's status is 101 when the socket is accepted, else its close code.
Row = tuple[str, str, int, int, int, int]
MATRIX: list[Row] = [
    # method  path                                          owner other staff anon
    ("GET",  "/",                                           200, 200, 200, 200),
    ("GET",  "/healthz",                                    503, 503, 503, 503),
    ("GET",  "/healthz/live",                               200, 200, 200, 200),
    ("GET",  "/classes/",                                   200, 200, 200, 200),
    ("GET",  "/classes/{class}/live",                       404, 404, 404, 302),
    # A class none of them teaches or joined (tests/classes/test_access.py: the class's own matrix).
    ("GET",  "/classes/{class}/",                           404, 404, 404, 302),
    ("GET",  "/classes/{class}/edit",                       404, 404, 404, 302),
    ("POST", "/classes/{class}/seats",                      404, 404, 404, 302),
    ("POST", "/classes/{class}/actions",                    404, 404, 404, 302),
    ("POST", "/classes/{class}/invites",                    404, 404, 404, 302),
    ("POST", "/classes/{class}/invites/ABCDEFGHJK/revoke",  404, 404, 404, 302),
    ("POST", "/classes/{class}/co-instructors",             404, 404, 404, 302),
    ("POST", "/classes/{class}/seat",                       404, 404, 404, 302),
    ("POST", "/classes/{class}/leave",                      404, 404, 404, 302),
    ("GET",  "/classes/{class}/export.csv",                 404, 404, 404, 302),
    ("GET",  "/classes/{class}/export.json",                404, 404, 404, 302),
    ("POST", "/classes/new",                                404, 404, 404, 302),
    ("POST", "/classes/join",                               302, 302, 302, 302),
    ("GET",  "/classes/join/ABCDEFGHJK",                    404, 404, 404, 200),
    ("GET",  "/api/classes",                                200, 200, 200, 401),
    ("POST", "/api/classes",                                403, 403, 403, 401),
    ("GET",  "/api/classes/{class}",                        404, 404, 404, 401),
    ("POST", "/api/classes/{class}/edit",                   404, 404, 404, 401),
    ("POST", "/api/classes/{class}/actions",                404, 404, 404, 401),
    ("GET",  "/api/classes/{class}/progress",               404, 404, 404, 401),
    ("POST", "/api/classes/{class}/seats/actions",          404, 404, 404, 401),
    ("GET",  "/api/classes/{class}/export",                 404, 404, 404, 401),
    ("POST", "/api/classes/{class}/invites",                404, 404, 404, 401),
    ("POST", "/api/classes/{class}/invites/ABCDEFGHJK/revoke", 404, 404, 404, 401),
    ("POST", "/api/classes/join",                           404, 404, 404, 401),
    ("GET",  "/api/classes/{class}/seat",                   404, 404, 404, 401),
    ("POST", "/api/classes/{class}/seat/open",              404, 404, 404, 401),
    ("POST", "/api/classes/{class}/seat/leave",             404, 404, 404, 401),
    ("GET",  "/api/classes/{class}/co-instructors",         404, 404, 404, 401),
    ("POST", "/api/classes/{class}/co-instructors",         404, 404, 404, 401),
    ("POST", "/api/classes/{class}/co-instructors/remove",  404, 404, 404, 401),
    ("GET",  "/accounts/signup/",                           302, 302, 302, 200),
    ("GET",  "/accounts/profile/",                          200, 200, 200, 302),
    ("POST", "/accounts/verify/resend/",                    302, 302, 302, 302),
    ("GET",  "/accounts/verify/not-a-token/",               400, 400, 400, 400),
    ("GET",  "/accounts/login/",                            200, 200, 200, 200),
    ("POST", "/accounts/logout/",                           302, 302, 302, 302),
    ("GET",  "/accounts/password_change/",                  200, 200, 200, 302),
    ("GET",  "/accounts/password_change/done/",             200, 200, 200, 302),
    ("GET",  "/accounts/password_reset/",                   200, 200, 200, 200),
    ("GET",  "/accounts/password_reset/done/",              200, 200, 200, 200),
    ("GET",  "/accounts/reset/MQ/set-password/",            200, 200, 200, 200),
    ("GET",  "/accounts/reset/done/",                       200, 200, 200, 200),
    ("POST", "/i18n/setlang/",                              302, 302, 302, 302),
    ("GET",  "/docs/",                                      200, 200, 200, 200),
    ("GET",  "/docs/search/?q=test",                        200, 200, 200, 200),
    ("GET",  "/docs/glossary/",                             200, 200, 200, 200),
    ("GET",  "/docs/img/diagram.svg",                       200, 200, 200, 200),
    ("GET",  "/docs/en/{doc}/",                             200, 200, 200, 200),
    ("GET",  "/docs/{doc}/",                                302, 302, 302, 302),
    ("GET",  "/labs/",                                      200, 200, 200, 200),
    ("GET",  "/labs/{lab}/",                                200, 200, 200, 200),
    ("GET",  "/labs/sessions/{session}/replay/",            200, 404, 200, 302),
    ("GET",  "/labs/sessions/{session}/replay.cast",        200, 404, 200, 302),
    ("GET",  "/labs/sessions/{session}/download.cast",      200, 404, 404, 302),
    ("GET",  "/api/",                                       404, 404, 404, 404),
    ("GET",  "/api/openapi.json",                           200, 200, 200, 200),
    ("GET",  "/api/docs",                                   200, 200, 200, 200),
    ("GET",  "/api/labs",                                   200, 200, 200, 200),
    ("POST", "/api/sessions",                               409, 201, 201, 401),
    ("GET",  "/api/sessions/{session}",                     200, 404, 200, 401),
    ("POST", "/api/sessions/{session}/check",               202, 404, 403, 401),
    ("POST", "/api/sessions/{session}/goto",                202, 404, 403, 401),
    ("POST", "/api/sessions/{session}/reset",               202, 404, 403, 401),
    ("POST", "/api/sessions/{session}/extend",              200, 404, 403, 401),
    ("POST", "/api/sessions/{session}/stop",                200, 404, 403, 401),
    ("GET",  "/api/timelines",                              200, 200, 200, 401),
    ("GET",  "/api/sessions/{session}/timeline",            200, 404, 200, 401),
    ("GET",  "/admin/",                                     302, 302, 200, 302),
    ("GET",  "/admin/login/",                               200, 200, 302, 200),
    ("POST", "/admin/logout/",                              302, 302, 302, 302),
    ("GET",  "/admin/password_change/",                     302, 302, 200, 302),
    ("GET",  "/admin/password_change/done/",                302, 302, 200, 302),
    ("GET",  "/admin/autocomplete/",                        302, 302, 403, 302),
    ("GET",  "/admin/jsi18n/",                              302, 302, 200, 302),
    ("GET",  "/admin/r/1/1/",                               302, 302, 404, 302),
    ("GET",  "/admin/labs/",                                302, 302, 404, 302),
    ("GET",  "/admin/no-such-page/",                        302, 302, 404, 302),
    ("GET",  "/admin/auth/group/",                          302, 302, 403, 302),
    ("GET",  "/admin/auth/group/add/",                      302, 302, 403, 302),
    ("GET",  "/admin/auth/group/{group}/",                        302, 302, 302, 302),
    ("GET",  "/admin/auth/group/{group}/change/",                 302, 302, 403, 302),
    ("GET",  "/admin/auth/group/{group}/delete/",                 302, 302, 403, 302),
    ("GET",  "/admin/auth/group/{group}/history/",                302, 302, 403, 302),
    ("GET",  "/admin/auth/user/",                           302, 302, 403, 302),
    ("GET",  "/admin/auth/user/add/",                       302, 302, 403, 302),
    ("GET",  "/admin/auth/user/{user}/password/",           302, 302, 403, 302),
    ("GET",  "/admin/auth/user/{user}/",                    302, 302, 302, 302),
    ("GET",  "/admin/auth/user/{user}/change/",             302, 302, 403, 302),
    ("GET",  "/admin/auth/user/{user}/delete/",             302, 302, 403, 302),
    ("GET",  "/admin/auth/user/{user}/history/",            302, 302, 403, 302),
    ("GET",  "/admin/labs/labsession/",                     302, 302, 403, 302),
    ("GET",  "/admin/labs/labsession/add/",                 302, 302, 403, 302),
    ("GET",  "/admin/labs/labsession/{session}/",           302, 302, 302, 302),
    ("GET",  "/admin/labs/labsession/{session}/change/",    302, 302, 403, 302),
    ("GET",  "/admin/labs/labsession/{session}/delete/",    302, 302, 403, 302),
    ("GET",  "/admin/labs/labsession/{session}/history/",   302, 302, 403, 302),
    ("GET",  "/admin/labs/poolvm/",                         302, 302, 403, 302),
    ("GET",  "/admin/labs/poolvm/add/",                     302, 302, 403, 302),
    ("GET",  "/admin/labs/poolvm/{pool}/",                       302, 302, 302, 302),
    ("GET",  "/admin/labs/poolvm/{pool}/change/",                302, 302, 403, 302),
    ("GET",  "/admin/labs/poolvm/{pool}/delete/",                302, 302, 403, 302),
    ("GET",  "/admin/labs/poolvm/{pool}/history/",               302, 302, 403, 302),
    ("GET",  "/admin/classes/",                             302, 302, 404, 302),
    ("GET",  "/admin/classes/labclass/",                    302, 302, 403, 302),
    ("GET",  "/admin/classes/labclass/add/",                302, 302, 403, 302),
    ("GET",  "/admin/classes/labclass/{class}/",            302, 302, 302, 302),
    ("GET",  "/admin/classes/labclass/{class}/change/",     302, 302, 403, 302),
    ("GET",  "/admin/classes/labclass/{class}/delete/",     302, 302, 403, 302),
    ("GET",  "/admin/classes/labclass/{class}/history/",    302, 302, 403, 302),
    ("WS",   "/ws/sessions/{session}/events/",              101, 4403, 101, 4403),
    ("WS",   "/ws/sessions/{session}/terminal/",            101, 4403, 101, 4403),
    # A class none of them teaches (tests/classes/test_live_access.py: the class's own matrix).
    ("WS",   "/ws/classes/{class}/live/",                   4403, 4403, 4403, 4403),
]  # fmt: skip
# The bodies the API's POST routes need to get past validation (the matrix is about who, not what).
BODIES: dict[str, dict[str, Any]] = {
    "api/sessions": {"lab": "{lab}"},
    "api/sessions/<session_id>/check": {"step": 1},
    "api/sessions/<session_id>/goto": {"step": 1},
    "api/classes": {
        "title": "T",
        "labs": ["{lab}"],
        "starts_at": "2030-01-01T10:00:00Z",
        "ends_at": "2030-01-01T12:00:00Z",
        "seats": 1,
    },
    "api/classes/<class_id>/edit": {
        "title": "T",
        "labs": ["{lab}"],
        "starts_at": "2030-01-01T10:00:00Z",
        "ends_at": "2030-01-01T12:00:00Z",
        "seats": 1,
    },
    "api/classes/<class_id>/actions": {"action": "end"},
    "api/classes/<class_id>/seats/actions": {"action": "extend", "seats": [1]},
    "api/classes/<class_id>/invites": {"expires_in_hours": 1},
    "api/classes/join": {"code": "ABCDEFGHJK"},
    "api/classes/<class_id>/co-instructors": {"name": "alice"},
    "api/classes/<class_id>/co-instructors/remove": {"name": "alice"},
}
HTTP_ROWS = [row for row in MATRIX if row[0] != "WS"]
WS_ROWS = [row for row in MATRIX if row[0] == "WS"]
ACCEPTED = 101


def cell_id(row: Row) -> str:
    return f"{row[0]} {row[1]}"


def cells(rows: list[Row]) -> list[Any]:
    return matrix_cells(rows, WHO, lambda row: row[2:], cell_id)


@pytest.fixture
def world(session: LabSession, people: People, lab_world: str, settings: Settings) -> dict[str, str]:
    """The values the matrix's paths name: alice's session, the lab, a built doc page with its picture."""
    write_doc(settings.CONTENT_DIR, "matrix-page", "Some text.\n")
    (settings.CONTENT_DIR / "docs" / "img").mkdir(exist_ok=True)
    (settings.CONTENT_DIR / "docs" / "img" / "diagram.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    build_content(settings.CONTENT_DIR)
    group = Group.objects.create(name="matrix")
    pool = PoolVM.objects.create(host=session.host, profile="tiny")
    record = cast.header_line(time.time()) + cast.event_line(0.5, "o", "$ ")  # alice's stored timeline
    SessionTimeline.objects.create(session=session, cast_gz=gzip.compress(record.encode()), raw_bytes=len(record))
    now = timezone.now()
    klass = LabClass.objects.create(title="Matrix", owner=make_user("matrix-teacher"), labs=[lab_world], seats=1,
                                    starts_at=now, ends_at=now + timedelta(hours=1))  # fmt: skip
    return {"session": session.id, "lab": lab_world, "doc": "matrix-page", "user": str(people.alice.pk),
            "group": str(group.pk), "pool": pool.pk, "class": str(klass.pk)}  # fmt: skip


# Values of the same shape as the world's, to see which route each path reaches without a world.
SAMPLE = {
    "session": "s-0123456789", "lab": "relay-check", "doc": "matrix-page", "user": "1", "group": "1", "pool": "pool-1",
    "class": "1",
}  # fmt: skip


def fill(template: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


def test_every_route_is_in_the_matrix() -> None:
    served = {url_route_of(fill(path, SAMPLE)) for _method, path, *_ in HTTP_ROWS}
    assert url_routes() - served == set(), "a route no row of MATRIX reaches: add one saying who may use it"
    operations = {(url_route_of(fill(path, SAMPLE)), method) for method, path, *_ in HTTP_ROWS}
    assert api_operations() - operations == set(), "an API operation (route and method) without a row"


def test_every_websocket_is_in_the_matrix() -> None:
    served = {websocket_route_of(fill(path, SAMPLE)) for _ws, path, *_ in WS_ROWS}
    assert websocket_routes() - served == set(), "a websocket no row of MATRIX reaches"


@pytest.mark.parametrize(("row", "who"), cells(HTTP_ROWS))
def test_page_and_api_matrix(row: Row, who: Who, people: People, world: dict[str, str]) -> None:
    method, path, *expected = row
    client = client_for(people.user(who))
    url = fill(path, world)
    if method == "GET":
        resp = client.get(url)
    else:
        body = {k: fill(v, world) if isinstance(v, str) else v for k, v in BODIES.get(url_route_of(url), {}).items()}
        resp = client.post(url, json.dumps(body) if body else None, content_type="application/json")
    assert resp.status_code == expected[WHO.index(who)], f"{who} {method} {url}: {resp.status_code}"


@websocket_db
@pytest.mark.parametrize(("row", "who"), cells(WS_ROWS))
def test_websocket_matrix(row: Row, who: Who, people: People, world: dict[str, str]) -> None:
    _ws, path, *expected = row
    headers = headers_for(people.user(who))
    outcome: list[int] = []

    async def scenario() -> None:
        accepted, code = await Socket(fill(path, world), headers).connect()
        outcome.append(ACCEPTED if accepted else code)

    run(scenario)
    assert outcome == [expected[WHO.index(who)]]
