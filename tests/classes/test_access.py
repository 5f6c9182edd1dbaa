"""Who may see and act on a class, over every class page and API route: the class's instructor
(owner), its co-instructor, another instructor, a learner of the class, a learner of another class,
and an anonymous visitor. Teachers of the class reach all of it; a learner reaches their own seat
only; everyone else is told the class does not exist (404), the anonymous asked to log in."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, Literal

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from classes import lifecycle
from classes.joining import join
from classes.models import ClassAction, LabClass
from tests.access_matrix import client_for, matrix_cells

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

Who = Literal["owner", "co", "instructor", "learner", "other_learner", "anonymous"]
WHO: tuple[Who, ...] = ("owner", "co", "instructor", "learner", "other_learner", "anonymous")
CODE = "{code}"
EDIT = {"title": "Renamed", "labs": ["relay-check"], "starts_at": "2030-01-01T10:00:00Z",
        "ends_at": "2030-01-01T12:00:00Z", "seats": 2}  # fmt: skip
# method, path, body; then the status each caller gets (in WHO's order). 302 from a page POST is the
# redirect back to the class page after the action (or to the log-in page for the anonymous).
Row = tuple[str, str, dict[str, Any] | None, tuple[int, int, int, int, int, int]]
ROWS: list[Row] = [
    ("GET",  "/classes/{class}/",                      None, (200, 200, 404, 200, 404, 302)),
    ("GET",  "/classes/{class}/edit",                  None, (200, 200, 404, 404, 404, 302)),
    ("GET",  "/classes/{class}/live",                  None, (200, 200, 404, 404, 404, 302)),
    ("GET",  "/classes/{class}/export.csv",            None, (200, 200, 404, 404, 404, 302)),
    ("GET",  "/classes/{class}/export.json",           None, (200, 200, 404, 404, 404, 302)),
    ("POST", "/classes/{class}/seats",                 {"action": "extend", "seats": "{seat}"},
                                                             (200, 200, 404, 404, 404, 302)),
    ("POST", "/classes/{class}/actions",               {"action": "close_joining"},
                                                             (200, 200, 404, 404, 404, 302)),
    ("POST", "/classes/{class}/invites",               {}, (302, 302, 404, 404, 404, 302)),
    ("POST", "/classes/{class}/co-instructors",        {"name": "nobody-at-all"},
                                                             (302, 302, 404, 404, 404, 302)),
    ("POST", "/classes/{class}/seat",                  {}, (404, 404, 404, 302, 404, 302)),
    ("POST", "/classes/{class}/leave",                 {}, (404, 404, 404, 200, 404, 302)),
    ("GET",  "/api/classes/{class}",                   None, (200, 200, 404, 404, 404, 401)),
    ("GET",  "/api/classes/{class}/progress",          None, (200, 200, 404, 404, 404, 401)),
    ("GET",  "/api/classes/{class}/export",            None, (200, 200, 404, 404, 404, 401)),
    ("POST", "/api/classes/{class}/edit",              EDIT, (200, 200, 404, 404, 404, 401)),
    ("POST", "/api/classes/{class}/actions",           {"action": "close_joining"},
                                                             (200, 200, 404, 404, 404, 401)),
    ("POST", "/api/classes/{class}/seats/actions",     {"action": "extend", "seats": ["{seat}"]},
                                                             (200, 200, 404, 404, 404, 401)),
    ("POST", "/api/classes/{class}/invites",           {}, (201, 201, 404, 404, 404, 401)),
    ("GET",  "/api/classes/{class}/seat",              None, (404, 404, 404, 200, 404, 401)),
    ("POST", "/api/classes/{class}/seat/leave",        {}, (404, 404, 404, 200, 404, 401)),
    # Co-instructors: every teacher sees them; only the owner adds or removes one (403 for a co-instructor).
    ("GET",  "/api/classes/{class}/co-instructors",    None, (200, 200, 404, 404, 404, 401)),
    ("POST", "/api/classes/{class}/co-instructors",    {"name": "rival"},
                                                             (201, 403, 404, 404, 404, 401)),
    ("POST", "/api/classes/{class}/co-instructors/remove", {"name": "ta"},
                                                             (200, 403, 404, 404, 404, 401)),
]  # fmt: skip


@pytest.fixture
def world(klass_open: LabClass, teacher: User, ta: User, rival: User, alice: User, bob: User) -> dict[str, Any]:
    """Alice holds a seat in the class; bob holds one in rival's class."""
    seat = join(alice, klass_open.invites.get().code)
    now = timezone.now()
    spec = lifecycle.ClassSpec(title="Other", labs=klass_open.labs, starts_at=now, ends_at=now + timedelta(hours=1),
                               seats=1)  # fmt: skip
    other = lifecycle.create_class(rival, spec)
    join(bob, other.invites.get().code)
    users = {"owner": teacher, "co": ta, "instructor": rival, "learner": alice, "other_learner": bob, "anonymous": None}
    return {"class": str(klass_open.pk), "seat": str(seat.pk), "users": users, "klass": klass_open}


def fill(value: Any, world: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return value.replace("{class}", world["class"]).replace("{seat}", world["seat"])
    if isinstance(value, list):
        return [int(fill(v, world)) if v == "{seat}" else fill(v, world) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, world) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("row", "who"), matrix_cells(ROWS, WHO, lambda r: r[3], lambda r: f"{r[0]} {r[1]}"))
def test_class_matrix(row: Row, who: Who, world: dict[str, Any]) -> None:
    method, path, body, expected = row
    client = client_for(world["users"][who])
    url = fill(path, world)
    before = ClassAction.objects.count()
    if method == "GET":
        resp = client.get(url)
    elif url.startswith("/api/"):
        resp = client.post(url, json.dumps(fill(body, world)), content_type="application/json")
    else:
        resp = client.post(url, fill(body, world))  # a form; the first POST of an action is its confirmation page
    assert resp.status_code == expected[WHO.index(who)], f"{who} {method} {url}: {resp.status_code}"
    if resp.status_code in (401, 403, 404) or (resp.status_code == 302 and who == "anonymous"):
        assert ClassAction.objects.count() == before, "a refused caller changed nothing"
        if url.startswith("/api/") and resp.status_code == 404:
            assert resp.json() == {"detail": "Not found"}  # the same as for a class that does not exist


def test_a_missing_class_looks_like_anothers(world: dict[str, Any]) -> None:
    client = client_for(world["users"]["instructor"])
    for path in ("/classes/{c}/", "/api/classes/{c}"):
        theirs, missing = client.get(path.format(c=world["class"])), client.get(path.format(c=2**31 - 1))
        assert theirs.status_code == missing.status_code == 404
    assert client.get(f"/classes/{2**70}/").status_code == 404  # past any id the database holds
    assert client.get(f"/api/classes/{2**70}").status_code == 422  # the API's schema bounds it


@pytest.mark.parametrize("who", ["learner", "other_learner", "instructor"])
def test_learners_and_outsiders_see_no_one_elses_progress(who: Who, world: dict[str, Any]) -> None:
    html = client_for(world["users"][who]).get(f"/classes/{world['class']}/").content.decode()
    assert "bob" not in html
    assert "/export.csv" not in html


def test_only_the_owner_adds_co_instructors(world: dict[str, Any]) -> None:
    klass: LabClass = world["klass"]
    client_for(world["users"]["co"]).post(f"/classes/{klass.pk}/co-instructors", {"name": "rival"})
    assert not klass.co_instructors.filter(username="rival").exists()
    client_for(world["users"]["owner"]).post(f"/classes/{klass.pk}/co-instructors", {"name": "rival@example.com"})
    assert klass.co_instructors.filter(username="rival").exists()


def test_joining_grants_a_seat_and_nothing_more(world: dict[str, Any]) -> None:
    from portal.roles import INSTRUCTOR, has_role

    alice = world["users"]["learner"]
    assert not has_role(alice, INSTRUCTOR)
    assert client_for(alice).get(f"/classes/{world['class']}/edit").status_code == 404
    assert client_for(alice).post("/classes/new", {"title": "Mine"}).status_code == 404
