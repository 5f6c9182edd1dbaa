"""Session timelines on a real stack: one lab session (typed input, a failed then passed check, a
revert, its host agent killed and restarted, the record's size cap reached) recorded, stored when it
ends, and read back through the API, the replay page (in Chromium) and the download, by who may."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from labs.timeline import cast
from tests import lab_stack, servers
from tests.lab_stack import STACK_PASSWORD, next_event, read_until
from tests.processes import kill_process_tree

pytestmark = [pytest.mark.vm, pytest.mark.slow]
CAP_BYTES = 16 * 1024  # the boot's console output and the typing fit; the flood below does not
FLOOD_BYTES = 24 * 1024


@dataclass
class Recorded:
    stack: lab_stack.LabStack
    session_id: str
    before_kill: str  # the record file as it was on disk when the agent was killed
    failed_at: float  # wall clock when the page was told of the failed check
    passed_at: float
    record: dict[str, Any]  # the API's answer: summary and every event


def session_is(state: str) -> Any:
    return lambda m: m.get("type") == "session" and m["session"]["state"] == state


def host_agent(stack: ExitStack, env: dict[str, str]) -> Any:
    host = env["VIRTLAB_HOST_NAME"]
    return stack.enter_context(servers.celery_worker(env, queues=f"host.{host},web", name=host))


def record_file(env: dict[str, str], session_id: str) -> Path:
    return Path(env["VIRTLAB_VAR_DIR"]) / "timelines" / f"{session_id}.cast"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    tmp = tmp_path_factory.mktemp("timeline")
    with ExitStack() as processes, lab_stack.lab_stack(tmp, agent=False, LABS_TTL_S="900",
                                                        LABS_TIMELINE_MAX_BYTES=str(CAP_BYTES)) as stack:  # fmt: skip
        host = stack.host
        processes.enter_context(servers.celery_worker(stack.env, queues=f"host.{host}.checks", name=f"{host}-checks"))
        with ExitStack() as first_agent:
            agent = host_agent(first_agent, stack.env)
            lab_stack.wait_for_advert(stack.redis_url, host)
            alice = stack.client("alice")
            status, body = alice.request("POST", "/api/sessions", {"lab": stack.slug})
            assert status == 201, body
            sid = body["id"]
            with alice.websocket(f"/ws/sessions/{sid}/events/") as events:
                next_event(events, session_is("ready"), 180)
                with alice.websocket(f"/ws/sessions/{sid}/terminal/") as term:
                    assert json.loads(term.recv(timeout=10))["type"] == "hello"
                    term.send(b"echo typed-$((6*7))\r")
                    read_until(term, re.compile(rb"typed-42"), 30)
                    alice.request("POST", f"/api/sessions/{sid}/check", {"step": 1})
                    next_event(events, lambda m: m.get("type") == "session" and "1" in m["session"]["results"], 90)
                    failed_at = time.time()
                    term.send(b"echo hi > /root/hello.txt; echo solved-$((1+1))\r")
                    read_until(term, re.compile(rb"solved-2"), 30)
                    alice.request("POST", f"/api/sessions/{sid}/check", {"step": 1})
                    next_event(events, lambda m: m.get("type") == "session" and m["session"]["current_step"] == 2, 90)
                    passed_at = time.time()
                assert alice.request("POST", f"/api/sessions/{sid}/goto", {"step": 1})[0] == 202
                next_event(events, session_is("resetting"), 30)
                next_event(events, session_is("ready"), 120)
            # What the record holds on disk before the crash: the typing and the revert are flushed.
            path = record_file(stack.env, sid)

            def on_disk() -> bool:
                return path.exists() and any(m.mark and m.mark["kind"] == "revert" for m in read_events(path))

            servers.wait_for(on_disk, 30, "the revert on disk")
            before_kill = path.read_text()
            kill_process_tree(agent.pid)
            agent.wait(10)
        with ExitStack() as second_agent:
            host_agent(second_agent, stack.env)
            with alice.websocket(f"/ws/sessions/{sid}/terminal/") as term:
                assert json.loads(term.recv(timeout=10))["type"] == "hello"
                deadline = time.monotonic() + 60
                while True:  # the new agent's relay attaches within a poll or two
                    term.send(b"echo after-restart-$((5+5))\r")
                    try:
                        read_until(term, re.compile(rb"after-restart-10"), 3)
                        break
                    except AssertionError:
                        assert time.monotonic() < deadline, "the restarted agent never relayed the terminal"
                # More output than the record may take: it notes the cut, and the lab goes on.
                term.send(f"head -c {FLOOD_BYTES} /dev/zero | tr '\\0' x; echo; echo still-here-$((3*3))\r".encode())
                read_until(term, re.compile(rb"still-here-9"), 180)
            assert alice.request("POST", f"/api/sessions/{sid}/stop")[0] == 200
            lab_stack.wait_for_state(alice, sid, {"destroyed"}, 60)

            def stored() -> bool:
                return alice.request("GET", f"/api/sessions/{sid}/timeline?limit=1")[0] == 200

            servers.wait_for(stored, 60, "the record stored")
            status, first = alice.request("GET", f"/api/sessions/{sid}/timeline?limit=5000")
            assert status == 200, first
            events_out = list(first["events"])
            while len(events_out) < first["total"]:
                _, more = alice.request("GET", f"/api/sessions/{sid}/timeline?limit=5000&offset={len(events_out)}")
                events_out += more["events"]
            yield Recorded(stack, sid, before_kill, failed_at, passed_at, {**first, "events": events_out})


def read_events(path: Path) -> list[cast.Event]:
    return cast.parse(path.read_text())[1]


def output_index(events: list[dict[str, Any]], text: str) -> int:
    """The index of the output event with which the terminal had shown `text` (it may span reads)."""
    shown = ""
    for i, event in enumerate(events):
        if event["code"] == "o":
            shown = (shown + event["data"])[-4 * len(text) :]
            if text in shown:
                return i
    raise AssertionError(f"{text!r} never shown")


def marks_of(events: list[dict[str, Any]]) -> list[tuple[float, dict[str, Any]]]:
    return [(e["t"], e["mark"]) for e in events if e["code"] == "m"]


def test_record_holds_typing_checks_and_revert_in_order_with_their_times(recorded: Recorded) -> None:
    events = recorded.record["events"]
    times = [e["t"] for e in events]
    assert times == sorted(times), "events out of order"

    def first(pred: Any) -> int:
        return next(i for i, e in enumerate(events) if pred(e))

    typed = first(lambda e: e["code"] == "i" and "typed-$((6*7))" in e["data"])
    echoed = output_index(events, "typed-42")
    fail = first(lambda e: (e["mark"] or {}).get("kind") == "check" and e["mark"]["ok"] is False)
    ok = first(lambda e: (e["mark"] or {}).get("kind") == "check" and e["mark"]["ok"] is True)
    revert = first(lambda e: (e["mark"] or {}).get("kind") == "revert")
    assert typed < echoed < fail < ok < revert
    assert events[fail]["mark"]["step"] == 1
    assert "not yet" in events[fail]["mark"]["reason_en"]
    assert events[fail]["mark"]["reason_zh"]  # the reason in both languages
    kinds = [m["kind"] for _, m in marks_of(events)]
    assert {"state", "checkpoint", "step", "resumed", "cut"} <= set(kinds)
    assert kinds[-1] == "state"
    assert marks_of(events)[-1][1]["state"] == "destroyed"
    # The times are the session's: a verdict is marked when it was given (the page was told just after).
    _header, _parsed = cast.parse(recorded.before_kill)
    start = cast.started_at(_header)
    assert recorded.failed_at - 10 < start + events[fail]["t"] <= recorded.failed_at + 0.5
    assert recorded.passed_at - 30 < start + events[ok]["t"] <= recorded.passed_at + 0.5


def test_a_killed_host_agent_loses_nothing_already_written(recorded: Recorded) -> None:
    _header, before = cast.parse(recorded.before_kill)
    alice = recorded.stack.client("alice")
    status, stored = alice.request("GET", f"/labs/sessions/{recorded.session_id}/download.cast")
    assert status == 200
    _header, after = cast.parse(stored)
    assert before
    assert set(before) <= set(after)  # every event written before the kill, as it was
    resumed = next(e.t for e in after if (e.mark or {}).get("kind") == "resumed")
    assert resumed >= max(e.t for e in before if e.code != "m")
    assert "after-restart-10" in "".join(e.data for e in after if e.code == "o" and e.t > resumed)


def test_the_size_cap_is_reached_noted_and_the_lab_went_on(recorded: Recorded) -> None:
    assert recorded.record["cut"] is True
    assert recorded.record["raw_bytes"] <= CAP_BYTES + 64 * 1024  # past the cap, markers only
    cut = next(t for t, m in marks_of(recorded.record["events"]) if m["kind"] == "cut")
    after_cut = [e for e in recorded.record["events"] if e["t"] > cut and e["code"] != "m"]
    assert after_cut == []  # only markers after the cut: the stop is still there
    status, page = recorded.stack.client("alice").request("GET", f"/labs/sessions/{recorded.session_id}/replay/")
    assert status == 200
    assert "reached its size limit" in page


TEACHERS = ("teacher", "coteacher", "otherteacher")


@pytest.fixture(scope="module")
def classroom(recorded: Recorded) -> lab_stack.LabStack:
    """Alice's session is her seat's in teacher's class (coteacher assists); otherteacher teaches another."""
    stack = recorded.stack
    lab_stack.create_users(stack.env, STACK_PASSWORD, *TEACHERS)
    stack.shell(
        "from datetime import timedelta\nfrom django.utils import timezone\n"
        "from django.contrib.auth.models import User\n"
        "from classes.models import LabClass, Seat\n"
        "from labs.models import LabSession\n"
        "now = timezone.now()\n"
        "def make(owner):\n"
        f"    return LabClass.objects.create(title='T', owner=User.objects.get(username=owner), labs=['{stack.slug}'],"
        " seats=2, starts_at=now, ends_at=now + timedelta(hours=1))\n"
        "klass = make('teacher'); make('otherteacher')\n"
        "klass.co_instructors.add(User.objects.get(username='coteacher'))\n"
        "seat = Seat.objects.create(klass=klass, user=User.objects.get(username='alice'))\n"
        f"seat.sessions.add(LabSession.objects.get(pk='{recorded.session_id}'))\n"
    )
    return stack


WHO = ("alice", "bob", "teacher", "coteacher", "otherteacher", "staffer", "anonymous")
# Who gets what: the replay page, its record, the API's events, the learner's download.
MATRIX = {
    "/labs/sessions/{sid}/replay/":        (200, 404, 200, 200, 404, 200, 302),
    "/labs/sessions/{sid}/replay.cast":    (200, 404, 200, 200, 404, 200, 302),
    "/api/sessions/{sid}/timeline":        (200, 404, 200, 200, 404, 200, 401),
    "/labs/sessions/{sid}/download.cast":  (200, 404, 404, 404, 404, 404, 302),
}  # fmt: skip


def client_of(stack: lab_stack.LabStack, who: str) -> lab_stack.LabClient:
    if who == "anonymous":
        return lab_stack.LabClient(stack.base)
    return stack.client(who)


def status_of(client: lab_stack.LabClient, path: str) -> int:
    """The status as sent: a redirect (to the login page) is not followed."""
    import urllib.error
    import urllib.request

    class Stop(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(client.jar), Stop())
    try:
        with opener.open(client.base + path, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_who_may_replay_and_download(recorded: Recorded, classroom: lab_stack.LabStack) -> None:
    got = {}
    for who in WHO:
        client = client_of(classroom, who)
        for path in MATRIX:
            got[(path, who)] = status_of(client, path.format(sid=recorded.session_id))
        if who != "anonymous":
            listed = {t["session"] for t in client.request("GET", "/api/timelines")[1]}
            got[("/api/timelines", who)] = 200 if recorded.session_id in listed else 404
    expected = {(path, who): row[i] for path, row in MATRIX.items() for i, who in enumerate(WHO)}
    expected |= {("/api/timelines", who): MATRIX["/api/sessions/{sid}/timeline"][i]
                 for i, who in enumerate(WHO) if who != "anonymous"}  # fmt: skip
    assert got == expected
    status, body = classroom.client("alice").request("GET", f"/labs/sessions/{recorded.session_id}/download.cast")
    assert status == 200
    assert isinstance(body, str)
    assert body.startswith('{"version": 2')


def test_replay_page_shows_the_marks_and_plays_to_the_failed_check(
    recorded: Recorded, classroom: lab_stack.LabStack, browser: Browser, artifacts: Path
) -> None:
    for scheme in ("light", "dark"):
        context = browser.new_context(viewport={"width": 1280, "height": 1000}, color_scheme=scheme)
        page = context.new_page()
        violations: list[str] = []

        def note(msg: Any, seen: list[str] = violations) -> None:
            if "Content Security Policy" in msg.text:
                seen.append(msg.text)

        page.on("console", note)
        page.goto(classroom.base + "/accounts/login/")
        page.fill("input[name=username]", "teacher")
        page.fill("input[name=password]", STACK_PASSWORD)
        page.locator("form button[type=submit], form input[type=submit]").first.click()
        page.wait_for_load_state()
        page.goto(f"{classroom.base}/labs/sessions/{recorded.session_id}/replay/")
        page.wait_for_selector("body[data-replay-ready]", timeout=30_000)
        marks = page.locator("#replay-marks li")
        expect(marks.filter(has_text="✗")).to_have_count(1)
        expect(marks.filter(has_text="✓")).to_have_count(1)
        expect(marks.filter(has_text="↺")).to_have_count(1)
        expect(page.locator(".ap-marker-container.replay-tick-fail")).to_have_count(1)  # on the scrubber too
        page.locator(".replay-jump[data-step='1']").click()
        # Played to the failed check: the screen then shows what was typed before it, not the solution.
        terminal = page.locator(".ap-term, .ap-terminal").first
        expect(terminal).to_contain_text("typed-42", timeout=15_000)
        expect(terminal).not_to_contain_text("solved-2")
        expect(page.locator("#replay-marks li[aria-current]")).to_contain_text("✗")
        page.screenshot(path=str(artifacts / f"replay-{scheme}.png"), full_page=True)
        assert violations == []
        context.close()
