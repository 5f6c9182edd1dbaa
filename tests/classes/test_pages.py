"""The class pages as an instructor and a learner use them: creating a class with the form, an
invite link followed before logging in, an action confirmed before it runs, the join throttle,
and an export a spreadsheet cannot run."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone, translation
from pytest_django import Settings

from classes.models import ClassAction, LabClass, Seat
from labs.models import LabSession
from tests.access_matrix import client_for
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.django_db]


def form_time(minutes: int) -> str:
    return (timezone.now() + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M")


def test_an_instructor_creates_a_class_with_the_form_and_an_oversized_one_is_refused(
    teacher: User, lab_world: str
) -> None:
    client = client_for(teacher)
    assert "New class" in client.get("/classes/").content.decode()
    fields = {"title": "Lab day", "lab_1": lab_world, "lab_2": "", "lab_3": "", "starts_at": form_time(120),
              "ends_at": form_time(240), "grace_minutes": 15, "lead_minutes": 10}  # fmt: skip
    refused = client.post("/classes/new", {**fields, "seats": 30})
    assert refused.status_code == 400
    assert "needs 30 x 176 MiB (lab profile tiny), the hosts have room for 10" in refused.content.decode()
    made = client.post("/classes/new", {**fields, "seats": 3})
    klass = LabClass.objects.get(title="Lab day")
    assert made["Location"] == f"/classes/{klass.pk}/"
    page = client.get(made["Location"]).content.decode()
    assert klass.invites.get().code in page
    assert "Seats ready 0/3" in page


def test_a_learner_follows_an_invite_link_logs_in_and_joins(klass_open: LabClass, alice: User) -> None:
    code = klass_open.invites.get().code
    client = client_for(None)
    page = client.get(f"/classes/join/{code}")
    assert page.status_code == 200
    assert klass_open.title not in page.content.decode(), "the anonymous learn nothing of the class"
    login = client.post(f"/accounts/login/?next=/classes/join/{code}",
                        {"username": "alice", "password": PASSWORD, "next": f"/classes/join/{code}"})  # fmt: skip
    assert login["Location"] == f"/classes/join/{code}"
    assert "Continue joining" in client.get("/classes/").content.decode(), "the invite was kept"
    assert klass_open.title in client.get(f"/classes/join/{code}").content.decode()
    joined = client.post(f"/classes/join/{code}")
    seat = Seat.objects.get(klass=klass_open, user=alice)
    assert seat.session is not None
    assert joined["Location"] == f"/labs/{klass_open.lab_slug}/", "on to the lab page, where the seat's VM is"
    assert LabSession.objects.get(pk=seat.session.pk).user == alice


def test_a_seat_action_runs_only_once_confirmed(klass_open: LabClass, teacher: User, alice: User) -> None:
    client_for(alice).post(f"/classes/join/{klass_open.invites.get().code}")
    seat = Seat.objects.get(user=alice)
    client = client_for(teacher)
    asked = client.post(f"/classes/{klass_open.pk}/seats", {"action": "extend", "seats": [seat.pk]})
    assert asked.status_code == 200
    assert "Yes, do it" in asked.content.decode()
    assert not ClassAction.objects.filter(action="extend").exists()
    done = client.post(f"/classes/{klass_open.pk}/seats", {"action": "extend", "seats": [seat.pk], "confirm": "on"})
    assert done.status_code == 302
    entry = ClassAction.objects.get(action="extend")
    assert (entry.actor, list(entry.seats.all())) == (teacher, [seat])


def test_trying_codes_is_rate_limited(settings: Settings, lab_world: str, bob: User) -> None:
    settings.CLASSES_JOIN_RATE = 3
    client = client_for(bob)
    statuses = [client.get(f"/classes/join/AAAAAAAA{n}{n}").status_code for n in range(2, 7)]
    assert statuses == [404, 404, 404, 429, 429]


def test_the_export_cannot_run_in_a_spreadsheet(klass_open: LabClass, teacher: User, lab_world: str) -> None:
    sly = User.objects.create_user("=HYPERLINK(1)", "sly@example.com", PASSWORD)
    client_for(sly).post(f"/classes/join/{klass_open.invites.get().code}")
    text = client_for(teacher).get(f"/classes/{klass_open.pk}/export.csv").content.decode()
    assert "'=HYPERLINK(1)" in text
    assert "\n=HYPERLINK" not in text


def test_pages_speak_chinese(klass_open: LabClass, teacher: User) -> None:
    client = client_for(teacher)
    client.cookies["django_language"] = "zh-hans"
    try:
        page: Any = client.get(f"/classes/{klass_open.pk}/")
    finally:
        translation.activate("en")  # the request activated Chinese in this thread: later tests read English
    assert "已就绪席位" in page.content.decode()


def test_a_learner_leaves_from_their_seat_page_once_confirmed_and_may_join_again(
    klass_open: LabClass, alice: User
) -> None:
    client = client_for(alice)
    code = klass_open.invites.get().code
    client.post(f"/classes/join/{code}")
    seat = Seat.objects.get(user=alice)
    first = seat.session
    assert first is not None
    leave = f"/classes/{klass_open.pk}/leave"
    assert f'action="{leave}"' in client.get(f"/classes/{klass_open.pk}/").content.decode()
    asked = client.post(leave)
    assert asked.status_code == 200
    assert "Yes, do it" in asked.content.decode()
    seat.refresh_from_db()
    assert seat.left_at is None, "nothing happens before the learner confirms"
    done = client.post(leave, {"confirm": "on"})
    assert done["Location"] == "/classes/"
    gone = Seat.objects.get(pk=seat.pk)
    assert gone.left_at is not None
    assert gone.left_by_learner
    assert LabSession.objects.get(pk=first.pk).state == "destroyed"
    page = client.get(f"/classes/{klass_open.pk}/").content.decode()
    assert "You left this class. Join it again with its invite code." in page
    assert f'action="{leave}"' not in page
    assert client.post(leave, {"confirm": "on"}).status_code == 404, "a seat left already cannot be left again"
    ClassAction.objects.get(action="leave", actor=alice)
    rejoined = client.post(f"/classes/join/{code}")
    assert rejoined["Location"] == f"/labs/{klass_open.lab_slug}/", "back in, with a fresh lab"
    seat.refresh_from_db()
    assert seat.left_at is None
    assert seat.session is not None
    assert seat.session.pk != first.pk


def test_class_actions_are_rate_limited_with_a_message_in_both_languages(
    settings: Settings, klass_open: LabClass, teacher: User
) -> None:
    settings.CLASSES_ACTION_RATE = 2
    client = client_for(teacher)
    url = f"/classes/{klass_open.pk}/actions"
    statuses = [client.post(url, {"action": "close_joining", "confirm": "on"}).status_code for _ in range(3)]
    assert statuses == [302, 302, 429]
    assert ClassAction.objects.filter(action="close_joining").count() == 2, "the refused action did not run"
    refused = client.post(f"/classes/{klass_open.pk}/invites", {})
    assert "Too many class actions in a short time" in refused.content.decode()
    assert int(refused["Retry-After"]) > 0
    client.cookies["django_language"] = "zh-hans"
    try:
        chinese = client.post(f"/classes/{klass_open.pk}/seats", {"action": "extend", "seats": [1]})
    finally:
        translation.activate("en")
    assert chinese.status_code == 429
    assert "短时间内的班级操作太多" in chinese.content.decode()
    assert client_for(teacher).get(f"/classes/{klass_open.pk}/").status_code == 200, "looking is never limited"
