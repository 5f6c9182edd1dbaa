"""The live grid follows the class's seats as they change, not only their sessions: a learner who
joins shows up, one who leaves or is removed goes, without waiting for the page's next full grid;
and a socket asking for the whole grid too often is refused with a notice. The real ASGI app and a
private Redis, no VM (tests/classes/test_live.py drives a real one)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from classes import consumers, joining, seats
from classes.models import Invite, LabClass, Seat
from tests.asgi_sockets import Socket, headers_for, run
from tests.conftest import make_user

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_a_learner_who_joins_shows_up_on_the_grid_and_goes_when_removed(klass: LabClass, teacher: User) -> None:
    code = Invite.objects.create(klass=klass, created_by=teacher).code
    lena = make_user("lena")
    headers = headers_for(teacher)

    async def scenario() -> None:
        grid = Socket(f"/ws/classes/{klass.pk}/live/", headers)
        assert (await grid.connect())[0]
        assert (await grid.text())["rows"] == []

        seat = await sync_to_async(joining.join)(lena, code)
        update = await grid.text()
        assert update["type"] == "seat"
        assert (update["row"]["seat"], update["row"]["user"], update["row"]["session"]) == (seat.pk, "lena", None)

        await sync_to_async(seats.act_on_seats)(teacher, klass, [seat.pk], "remove")
        assert await grid.text() == {"type": "seat_gone", "seat": seat.pk}

    run(scenario)
    assert Seat.objects.get(klass=klass, user=lena).left_at is not None


def test_a_learner_seated_from_the_line_is_shown_seated(klass: LabClass, teacher: User) -> None:
    klass.seats = 1
    klass.save(update_fields=["seats"])
    code = Invite.objects.create(klass=klass, created_by=teacher).code
    first, second = joining.join(make_user("ann"), code), joining.join(make_user("ben"), code)
    assert second.waiting
    headers = headers_for(teacher)

    async def scenario() -> None:
        grid = Socket(f"/ws/classes/{klass.pk}/live/", headers)
        assert (await grid.connect())[0]
        assert [row["waiting"] for row in (await grid.text())["rows"]] == [False, True]
        await sync_to_async(seats.leave_class)(first)
        updates = [await grid.text(), await grid.text()]
        assert {"type": "seat_gone", "seat": first.pk} in updates
        [seated] = [u["row"] for u in updates if u["type"] == "seat"]
        assert (seated["user"], seated["waiting"]) == ("ben", False)

    run(scenario)


def test_asking_for_the_whole_grid_too_often_gets_a_notice(
    klass: LabClass, teacher: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(consumers, "REFRESH_EVERY_S", 0.5)
    headers = headers_for(teacher)

    async def scenario() -> None:
        grid = Socket(f"/ws/classes/{klass.pk}/live/", headers)
        assert (await grid.connect())[0]
        assert (await grid.text())["type"] == "grid"
        for _ in range(20):  # a loop asking as fast as it can: told once (notices are once a second)
            await grid.send_json({"type": "refresh"})
        notice = await grid.text()
        assert (notice["type"], notice["code"]) == ("notice", "refresh_rate")
        assert await grid.silent(0.6), "only the one notice: no grid was sent"
        await grid.send_json({"type": "refresh"})  # the page's own pace is answered
        assert (await grid.text())["type"] == "grid"

    run(scenario)
