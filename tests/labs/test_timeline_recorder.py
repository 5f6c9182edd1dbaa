"""The recorder, the store, retention and the export, without a VM: real files, a real Redis, the DB."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from pytest_django import Settings

from classes.models import LabClass, Seat
from labs.host import recorder
from labs.models import LabSession
from labs.redis_names import timeline_marks_key
from labs.states import SessionState
from labs.timeline import cast
from labs.timeline.models import SessionTimeline
from labs.timeline.retention import purge_old_timelines
from tests import lab_stack, servers

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


@pytest.fixture
def redis_url(settings: Settings, tmp_path: Path) -> Iterator[str]:
    settings.LABS_TIMELINE_DIR = tmp_path / "timelines"
    with servers.private_redis() as url:
        lab_stack.point_settings_at_redis(settings, url)
        yield url


def ended_session(user: User) -> LabSession:
    return LabSession.objects.create(user=user, lab_slug="relay-check", host="here", state=SessionState.DESTROYED,
                                     ended_at=timezone.now() - timedelta(seconds=10))  # fmt: skip


def test_a_restarted_recorder_appends_and_drops_the_line_a_kill_cut_short(redis_url: str) -> None:
    first = recorder.Recorder("s-one")
    first.output("héllo".encode()[:2])  # a UTF-8 character split across two reads
    first.output("héllo".encode()[2:])
    first.input(b"ls\r")
    first.flush()
    written = first.path.read_text()
    with first.path.open("a") as f:
        f.write('[9.9, "o", "half a li')  # the agent was killed mid-write
    second = recorder.Recorder("s-one")
    second.output(b"after")
    second.close()
    text = second.path.read_text()
    assert text.startswith(written)  # nothing written before is lost
    _, events = cast.parse(text)
    assert [(e.code, e.data) for e in events] == [("o", "h"), ("o", "éllo"), ("i", "ls\r"),
                                                  ("m", '{"kind":"resumed"}'), ("o", "after")]  # fmt: skip
    assert "half a li" not in text


def test_the_cap_is_noted_once_and_markers_still_go_in(redis_url: str) -> None:
    rec = recorder.Recorder("s-cap", max_bytes=1000)
    for _ in range(50):
        rec.output(b"x" * 50)
    rec.output(b"y")  # would fit in what the cut left: still not recorded
    rec.marker(time.time(), "check", step=1, ok=True)
    rec.close()
    _, events = cast.parse(rec.path.read_text())
    kinds = [(e.mark or {}).get("kind") for e in events if e.code == "m"]
    assert kinds == ["cut", "check"]
    assert "y" not in [e.data for e in events]
    assert rec.cut
    assert rec.path.stat().st_size <= 1000 + recorder.MARKER_RESERVE_BYTES


def test_an_ended_sessions_record_is_stored_in_time_order_and_the_file_removed(redis_url: str, alice: User) -> None:
    session = ended_session(alice)
    rec = recorder.Recorder(session.pk)
    rec.output(b"before the check\r\n")
    verdict_at = time.time()
    time.sleep(0.05)
    rec.output(b"after the check\r\n")  # written before the marker is drained
    rec.close()
    # The verdict's marker was stamped before that output but drained after it (another process).
    client = redis.Redis.from_url(redis_url)
    verdict = {"at": verdict_at, "kind": "check", "step": 1, "ok": False, "reason": {"en": "not yet", "zh": "还没有"}}
    client.rpush(timeline_marks_key(session.pk), json.dumps(verdict))
    recorder.finish_ended("here", set(), client)
    assert not rec.path.exists()
    stored = SessionTimeline.objects.get(session=session)
    _, events = cast.parse(gzip.decompress(bytes(stored.cast_gz)).decode())
    assert [e.t for e in events] == sorted(e.t for e in events)
    labels = [e.data.strip() if e.code == "o" else (e.mark or {}).get("kind") for e in events]
    assert labels == ["before the check", "check", "after the check", "state"]  # the final state added
    assert events[-1].mark == {"kind": "state", "state": "destroyed", "step": 1}


def test_a_running_or_other_hosts_session_is_not_stored_yet(redis_url: str, alice: User) -> None:
    running = LabSession.objects.create(user=alice, lab_slug="relay-check", host="here", state=SessionState.READY)
    elsewhere = ended_session(alice)
    LabSession.objects.filter(pk=elsewhere.pk).update(host="there")
    for session in (running, elsewhere):
        recorder.Recorder(session.pk).close()
    recorder.finish_ended("here", set(), redis.Redis.from_url(redis_url))
    assert not SessionTimeline.objects.exists()
    assert recorder.record_path(running.pk).exists()


def test_records_go_with_the_account_and_after_the_retention_period(alice: User, bob: User, settings: Settings) -> None:
    settings.LABS_TIMELINE_KEEP_DAYS = 30
    old, new = ended_session(alice), ended_session(bob)
    for session in (old, new):
        SessionTimeline.objects.create(session=session, cast_gz=gzip.compress(b"{}"), raw_bytes=2)
    SessionTimeline.objects.filter(session=old).update(created_at=timezone.now() - timedelta(days=31))
    assert purge_old_timelines() == 1
    assert list(SessionTimeline.objects.values_list("session", flat=True)) == [new.pk]
    bob.delete()
    assert not SessionTimeline.objects.exists()


def test_export_writes_a_classs_records(alice: User, bob: User, tmp_path: Path) -> None:
    teacher = User.objects.create_user("teacher")
    now = timezone.now()
    klass = LabClass.objects.create(title="T", owner=teacher, labs=["relay-check"], seats=2, starts_at=now,
                                    ends_at=now + timedelta(hours=1))  # fmt: skip
    seated, outsider = ended_session(alice), ended_session(bob)
    Seat.objects.create(klass=klass, user=alice).sessions.add(seated)
    record = cast.header_line(time.time()) + cast.event_line(0.1, "o", "$ ")
    for session in (seated, outsider):
        SessionTimeline.objects.create(session=session, cast_gz=gzip.compress(record.encode()), raw_bytes=len(record))
    call_command("export_timelines", str(klass.pk), str(tmp_path / "out"))
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert [entry["session"] for entry in index] == [seated.pk]
    assert (tmp_path / "out" / index[0]["file"]).read_text() == record


@pytest.mark.parametrize("staff_sees", [True, False])
def test_staff_replay_only_as_configured(alice: User, settings: Settings, staff_sees: bool) -> None:
    settings.LABS_TIMELINE_STAFF_SEES = staff_sees
    session = ended_session(alice)
    record = cast.header_line(time.time()) + cast.event_line(0.1, "o", "$ ")
    SessionTimeline.objects.create(session=session, cast_gz=gzip.compress(record.encode()), raw_bytes=len(record))
    staff = User.objects.create_user("staffer", is_staff=True)
    client = Client()
    client.force_login(staff)
    expected = 200 if staff_sees else 404
    assert client.get(f"/api/sessions/{session.pk}/timeline").status_code == expected
    assert client.get(f"/labs/sessions/{session.pk}/replay.cast").status_code == expected
    assert client.get(f"/labs/sessions/{session.pk}/download.cast").status_code == 404  # the learner's alone
