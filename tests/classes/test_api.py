"""The class API's newer operations as scripts use them: a learner leaving their seat, the owner
managing co-instructors (a co-instructor may not), both in the OpenAPI document, and the action
rate limit shared with the pages."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from pytest_django import Settings

from classes.joining import join
from classes.models import ClassAction, LabClass, Seat
from tests.access_matrix import client_for

pytestmark = [pytest.mark.django_db]


def post(client: Client, url: str, body: dict[str, Any] | None = None, **headers: str) -> Any:
    return client.post(url, json.dumps(body or {}), content_type="application/json", headers=headers)


def test_a_learner_leaves_by_api_and_joins_again(klass_open: LabClass, alice: User, bob: User, carol: User) -> None:
    code = klass_open.invites.get().code
    client = client_for(alice)
    joined = post(client, "/api/classes/join", {"code": code}).json()
    join(bob, code)
    carol_seat = join(carol, code)
    assert carol_seat.waiting
    left = post(client, f"/api/classes/{klass_open.pk}/seat/leave")
    assert left.status_code == 200
    assert left.json()["left"] is True
    assert not Seat.objects.get(pk=carol_seat.pk).waiting, "carol, next in line, has alice's seat"
    entry = ClassAction.objects.get(action="leave")
    assert entry.actor == alice
    assert post(client, f"/api/classes/{klass_open.pk}/seat/leave").status_code == 409
    again = post(client, "/api/classes/join", {"code": code}).json()
    assert (again["left"], again["waiting"], again["position"]) == (False, True, 1)
    assert joined["session"] is not None


def test_the_owner_manages_co_instructors_by_name_or_address(klass_open: LabClass, teacher: User, ta: User,
                                                             rival: User) -> None:  # fmt: skip
    owner, co = client_for(teacher), client_for(ta)
    base = f"/api/classes/{klass_open.pk}/co-instructors"
    assert [p["username"] for p in co.get(base).json()] == ["ta"]
    added = post(owner, base, {"name": "RIVAL@example.com"})
    assert added.status_code == 201
    assert [p["username"] for p in added.json()] == ["rival", "ta"]
    assert client_for(rival).get(f"/api/classes/{klass_open.pk}").status_code == 200, "rival teaches it now"
    refused = post(co, f"{base}/remove", {"name": "rival"})
    assert refused.status_code == 403
    assert refused.json() == {"detail": "Only the class's instructor can remove co-instructors."}
    assert post(co, base, {"name": "teacher"}).status_code == 403
    assert post(owner, base, {"name": "nobody"}).status_code == 400
    assert post(owner, f"{base}/remove", {"name": "nobody"}).json() == {
        "detail": "This person is not a co-instructor of the class."
    }
    removed = post(owner, f"{base}/remove", {"name": "rival"})
    assert [p["username"] for p in removed.json()] == ["ta"]
    assert client_for(rival).get(f"/api/classes/{klass_open.pk}").status_code == 404
    log = list(ClassAction.objects.filter(actor=teacher).values_list("action", "detail"))
    assert ("add_co_instructor", {"user": "rival"}) in log
    assert ("remove_co_instructor", {"user": "rival"}) in log
    schema = client_for(None).get("/api/openapi.json").json()
    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/api/classes/{class_id}/co-instructors"])
    assert "post" in paths["/api/classes/{class_id}/co-instructors/remove"]
    assert "post" in paths["/api/classes/{class_id}/seat/leave"]


def test_api_actions_count_with_the_pages_and_refuse_in_the_callers_language(
    settings: Settings, klass_open: LabClass, teacher: User
) -> None:
    settings.CLASSES_ACTION_RATE = 2
    client = client_for(teacher)
    assert (
        client.post(f"/classes/{klass_open.pk}/actions", {"action": "close_joining", "confirm": "on"}).status_code
        == 302
    )
    url = f"/api/classes/{klass_open.pk}/actions"
    assert post(client, url, {"action": "open_joining"}).status_code == 200
    refused = post(client, url, {"action": "close_joining"})
    assert refused.status_code == 429
    assert refused.json() == {"detail": "Too many class actions in a short time. Wait a moment, then try again."}
    chinese = post(client, f"/api/classes/{klass_open.pk}/invites", {}, **{"Accept-Language": "zh-hans"})
    assert chinese.status_code == 429
    assert chinese.json() == {"detail": "短时间内的班级操作太多。请稍等片刻再试。"}
    assert client.get(f"/api/classes/{klass_open.pk}").json()["joining_open"] is True, "the refused close did not run"
