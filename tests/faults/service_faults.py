"""Faults of the services under the workers, each applied to a ready session: libvirtd killed
(idle, and under a running check), Redis restarted (with its data, and empty), a web worker killed.
The lab keeps running, its terminal comes back with its scrollback, and checks work (scenarios.py
runs them in the matrix).
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable
from typing import Any

import redis

from labs.host_registry import HostAdvert
from labs.redis_names import ADVERT_PREFIX
from labs.states import SessionState
from tests import lab_stack, servers
from tests.faults.drill import Drill, Outcome
from tests.faults.learner import open_events, open_ws, terminal_recovered, type_marker
from tests.lab_stack import next_event

S = SessionState


def libvirtd_restarted(drill: Drill, sid: str) -> Outcome:
    """libvirtd dies and comes back: VMs keep running, the console relay re-attaches, checks work."""
    outcome = Outcome("restart libvirtd", phase="ready", session=sid)
    client = drill.owner(sid)
    box = drill.box(sid)
    type_marker(client, sid, "before-libvirtd")
    outcome.hit()
    box.restart_libvirtd(signal.SIGKILL, down_s=1.0)
    back = time.monotonic()
    try:  # libvirtd answers again: the host advertises so within seconds, not at its next advert but one
        servers.wait_for(lambda: libvirt_advertised(drill, box.name), ADVERT_BACK_S, "libvirt ok in the advert")
        outcome.phase += f", advert back {time.monotonic() - back:.1f}s after libvirtd"
    except TimeoutError as exc:
        outcome.problems.append(str(exc))
    drill.settle(outcome)
    _console_and_check_work(drill, outcome, client, sid, "before-libvirtd")
    return outcome


ADVERT_BACK_S = 10.0  # the advert loop probes libvirtd every second (it took 20-25 s, two advert rounds)


def libvirt_advertised(drill: Drill, host: str) -> bool:
    raw = redis.Redis.from_url(drill.stack.redis_url).get(ADVERT_PREFIX + host)
    return raw is not None and HostAdvert.from_json(raw).libvirt_ok


def libvirtd_killed_mid_check(drill: Drill, sid: str) -> Outcome:
    """libvirtd dies while a check runs in the guest (step 1's takes CHECK_SECONDS): the check is
    run again once libvirtd is back, its verdict reaches the page and the lab stays ready."""
    outcome = Outcome("kill libvirtd: checking", phase="ready", session=sid)
    client = drill.owner(sid)
    box = drill.box(sid)

    def kill_libvirtd() -> None:
        outcome.phase = "checking"
        outcome.hit()
        box.restart_libvirtd(signal.SIGKILL, down_s=1.0)

    check_current_step(outcome, client, sid, midway=kill_libvirtd)
    drill.settle(outcome)
    session = drill.learner_sees_clear_state(outcome, client, sid)
    outcome.expect(session["state"] == S.READY, f"the lab ended: {session['state']} {session['error']}")
    return outcome


def redis_restarted(drill: Drill, sid: str) -> Outcome:
    """Redis (broker, channel layer, scrollback) restarts with its data: every worker and web
    process reconnects; the terminal comes back with its scrollback; checks work."""
    outcome = Outcome("restart redis", phase="ready", session=sid)
    client = drill.owner(sid)
    type_marker(client, sid, "before-redis")
    check_current_step(outcome, client, sid)  # the workers hold pooled connections from now on
    outcome.hit()
    drill.stack.redis_server.restart(signal.SIGTERM, down_s=1.0)
    drill.settle(outcome)
    _console_and_check_work(drill, outcome, client, sid, "before-redis")
    return outcome


def redis_lost_its_data(drill: Drill, sid: str) -> Outcome:
    """Redis restarts empty (as `make run`'s Redis, which keeps nothing): queued task messages,
    adverts, scrollback and markers are gone. Hosts advertise again, lost starts are sent again by
    their host, the lab keeps running and its console answers; a new start works."""
    outcome = Outcome("restart redis, data lost", phase="ready", session=sid)
    client = drill.owner(sid)
    newcomer = drill.learner()
    fresh = drill.start(newcomer)  # its provision message may be lost with the data
    outcome.phase = f"ready, and a start {drill.stack.row(fresh).state}"
    server = drill.stack.redis_server
    outcome.hit()
    server.stop(signal.SIGKILL)
    shutil.rmtree(server.workdir)
    server.start()
    drill.settle(outcome)
    for who, session_id in ((client, sid), (newcomer, fresh)):
        session = drill.learner_sees_clear_state(outcome, who, session_id)
        outcome.expect(session["state"] == S.READY, f"{session_id}: {session['state']} {session['error']}")
    try:
        terminal_recovered(client, sid, marker=None)
    except AssertionError as exc:
        outcome.problems.append(f"terminal: {exc}")
    check_current_step(outcome, client, sid)
    newcomer.request("POST", f"/api/sessions/{fresh}/stop")
    return outcome


def web_worker_killed(drill: Drill, sid: str) -> Outcome:
    """One uvicorn worker dies with sockets open: pages reconnect (to the other, or its
    replacement) and find their lab as it was, scrollback included."""
    outcome = Outcome("kill web worker", phase="ready", session=sid)
    client = drill.owner(sid)
    type_marker(client, sid, "before-web")
    sockets = [open_ws(client, f"/ws/sessions/{sid}/{kind}/") for kind in ("terminal", "events")]
    outcome.hit()
    drill.stack.web.kill_worker()
    for ws in sockets:
        ws.close()
    drill.settle(outcome)
    _console_and_check_work(drill, outcome, client, sid, "before-web")
    return outcome


def _console_and_check_work(drill: Drill, outcome: Outcome, client: lab_stack.LabClient, sid: str, marker: str) -> None:
    session = drill.learner_sees_clear_state(outcome, client, sid)
    outcome.expect(session["state"] == S.READY, f"the lab ended: {session['state']} {session['error']}")
    if session["state"] != S.READY:
        return
    try:
        terminal_recovered(client, sid, marker)
    except AssertionError as exc:
        outcome.problems.append(f"terminal: {exc}")
    check_current_step(outcome, client, sid)


def check_current_step(
    outcome: Outcome, client: lab_stack.LabClient, sid: str, midway: Callable[[], None] | None = None
) -> None:
    """Press Check on the current step; its verdict must reach the page (and the lab stay up).
    `midway` (a fault) is applied once the page is told the check runs in the guest."""
    events, session = open_events(client, sid)
    step = int(session["current_step"])
    before = session["results"].get(str(step), {}).get("at")
    with events:
        status, body = client.request("POST", f"/api/sessions/{sid}/check", {"step": step})
        outcome.expect(status == 202, f"check refused: {status} {body}")
        if midway is not None:
            next_event(events, lambda m: m.get("type") == "progress" and m.get("stage") == "checking", 60)
            midway()
        try:
            verdict = next_event(events, lambda m: _new_result(m, step, before), 90)
        except AssertionError as exc:
            outcome.problems.append(f"no verdict: {exc}")
            return
        state = verdict["session"]["state"]
        outcome.expect(state == S.READY, f"the check ended the lab: {state} {verdict['session']['error']}")


def _new_result(message: dict[str, Any], step: int, before: str | None) -> bool:
    if message.get("type") != "session":
        return False
    session = message["session"]
    result = session["results"].get(str(step))
    return bool(result and result["at"] != before) or session["current_step"] != step
