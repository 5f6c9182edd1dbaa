"""The fault matrix: each fault applied to a running stack, then what recovery left behind.

Every case returns an `Outcome`: the phase the session was really in when the fault hit, what a
learner would have seen go wrong (`problems`: no clear state, a terminal that does not come back,
a lost verdict) and the audit after recovery (orphaned domains or disks, stuck sessions). Here: a
host worker killed at each phase, and the two-host case; the services under the workers (libvirtd,
Redis, a web worker) fail in service_faults.py. The CI tests (tests/faults/test_*.py) assert on
single outcomes; bench/faults.py runs the whole matrix many times and counts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from labs.states import ENDED, SessionState
from tests import lab_stack, servers
from tests.faults.drill import BOOT_S, RECOVERY_S, Drill, Outcome, stop_all
from tests.faults.learner import (
    open_events,
    session_state,
    type_marker,
)
from tests.faults.service_faults import (
    libvirtd_killed_mid_check,
    libvirtd_restarted,
    redis_lost_its_data,
    redis_restarted,
    web_worker_killed,
)
from tests.lab_stack import next_event

S = SessionState


# --- a host worker killed with SIGKILL at each phase of a session's life


def killed_while_requested(drill: Drill) -> Outcome:
    """The hosts' agents died just before a start was placed (their adverts still stand): the
    session waits `requested`, and starts once its host's agent is back."""
    outcome = Outcome("kill agent: requested")
    live = [box for name, box in drill.stack.hosts.items() if name not in drill.stack.lost]
    for box in live:
        outcome.hit()
        box.kill_agent()
    client = drill.learner()
    sid = drill.start(client)
    outcome.phase = drill.stack.row(sid).state
    for box in live:
        box.start_agent()
    drill.settle(outcome)
    session = drill.learner_sees_clear_state(outcome, client, sid)
    outcome.expect(session["state"] == S.READY, f"a start that never began ended as {session['state']}")
    if session["state"] == S.READY:
        outcome.session = sid
    return outcome


def killed_while_provisioning(drill: Drill) -> Outcome:
    """Killed while booting: the session fails with a message and its half-made VM is reaped."""
    outcome = Outcome("kill agent: provisioning")
    client = drill.learner()
    sid = drill.start(client)
    box = drill.box(sid)
    events, _ = open_events(client, sid)
    with events:
        servers.wait_for(lambda: drill.stack.row(sid).state == S.PROVISIONING, BOOT_S, "provisioning")
        servers.wait_for(lambda: sid in {d.session_id for d in box.domains()}, BOOT_S, "the VM being made")
        outcome.hit()
        box.kill_agent()
        outcome.phase = drill.stack.row(sid).state
        box.start_agent()
        # The page that was open is told, live, by the restarted agent (the periodic reconciler
        # would fail the boot only past LABS_PROVISION_TIMEOUT_S: 60 s here).
        with contextlib.suppress(AssertionError):
            next_event(events, lambda m: m.get("type") == "session" and m["session"]["state"] in ENDED, 30)
            outcome.phase += ", page told live"
    drill.settle(outcome)
    session = drill.learner_sees_clear_state(outcome, client, sid)
    if outcome.phase.startswith(S.PROVISIONING):
        outcome.expect(session["state"] in ENDED and session["error"], f"an interrupted boot shows {session}")
        outcome.expect("page told live" in outcome.phase, "the open page was not told the boot failed")
    return outcome


def killed_while_checkpointing(drill: Drill) -> Outcome:
    """Killed as the session turned ready, while step 1's checkpoint was taken: the restarted agent
    takes (or records) it and lets the learner type."""
    outcome = Outcome("kill agent: checkpointing")
    client = drill.learner()
    lab = drill.cold_lab()
    sid = drill.start(client, lab)
    box = drill.box(sid)
    events, _ = open_events(client, sid)
    with events:
        next_event(events, session_state(S.READY), BOOT_S)
        outcome.hit()
        box.kill_agent()
    row = drill.stack.row(sid)
    outcome.phase = "checkpointing" if row.state == S.READY and not row.checkpoints else f"after ({row.checkpoints})"
    box.start_agent()
    drill.settle(outcome)
    session = drill.learner_sees_clear_state(outcome, client, sid)
    outcome.expect(session["state"] == S.READY, f"the lab ended: {session['state']} {session['error']}")
    if session["state"] == S.READY:
        outcome.expect(session["checkpoints"] == [1], f"checkpoints {session['checkpoints']}")
        try:
            type_marker(client, sid, "typed-after-checkpoint")
        except AssertionError as exc:
            outcome.problems.append(f"terminal input still held back: {exc}")
    # Its one-off lab goes, and with it (once unused) the template the host built of it.
    client.request("POST", f"/api/sessions/{sid}/stop")
    drill.drop_lab(lab)
    return outcome


def killed_while_checking(drill: Drill, sid: str) -> Outcome:
    """The worker running a check dies mid-check: back up, it runs the check again and the page
    gets the verdict (and the learner may check again)."""
    outcome = Outcome("kill check worker: checking", session=sid)
    client = drill.owner(sid)
    box = drill.box(sid)
    type_marker(client, sid, "solved", "echo hi > /root/hello.txt")
    events, _ = open_events(client, sid)
    with events:
        status, body = client.request("POST", f"/api/sessions/{sid}/check", {"step": 1})
        assert status == 202, body
        next_event(events, lambda m: m.get("type") == "progress" and m.get("stage") == "checking", 60)
        outcome.hit()
        box.kill_checks()
        outcome.phase = "checking" if 1 not in drill.stack.results(sid) else "after the verdict"
        box.restart_checks()
        try:
            next_event(events, lambda m: m.get("type") == "session" and m["session"]["current_step"] == 2, 90)
        except AssertionError as exc:
            outcome.problems.append(f"no verdict after the restart: {exc}")
        # The interrupted check no longer blocks the next one.
        status, body = client.request("POST", f"/api/sessions/{sid}/check", {"step": 2})
        outcome.expect(status == 202, f"a new check was refused: {status} {body}")
        if status == 202:
            try:
                next_event(events, lambda m: m.get("type") == "session" and "2" in m["session"]["results"], 60)
            except AssertionError as exc:
                outcome.problems.append(f"no verdict for the next check: {exc}")
    drill.settle(outcome)
    drill.learner_sees_clear_state(outcome, client, sid)
    return outcome


def killed_while_reverting(drill: Drill, sid: str) -> Outcome:
    """Killed while restoring a checkpoint: the session fails with a message (or, if the revert
    finished first, is ready at the step it went back to)."""
    outcome = Outcome("kill agent: reverting", session=sid)
    client = drill.owner(sid)
    box = drill.box(sid)
    events, _ = open_events(client, sid)
    with events:
        status, body = client.request("POST", f"/api/sessions/{sid}/reset")
        assert status == 202, body
        next_event(events, session_state(S.RESETTING), 30)
        outcome.hit()
        box.kill_agent()
        outcome.phase = drill.stack.row(sid).state
        box.start_agent()
    drill.settle(outcome)
    session = drill.learner_sees_clear_state(outcome, client, sid)
    outcome.expect(session["state"] == S.READY or session["error"], f"an interrupted reset shows {session}")
    outcome.session = sid if session["state"] == S.READY else ""
    return outcome


def killed_while_destroying(drill: Drill, sid: str) -> Outcome:
    """Killed while a stopped session's VM is torn down: the VM and its disks go all the same."""
    outcome = Outcome("kill agent: destroying", session=sid)
    client = drill.owner(sid)
    box = drill.box(sid)
    status, body = client.request("POST", f"/api/sessions/{sid}/stop")
    assert status == 200, body
    outcome.hit()
    box.kill_agent()
    still_there = sid in {d.session_id for d in box.domains()}
    outcome.phase = "destroying" if still_there else "after the teardown"
    box.start_agent()
    drill.settle(outcome)
    session = drill.learner_sees_clear_state(outcome, client, sid)
    outcome.expect(session["state"] == S.DESTROYED, f"a stopped lab shows {session['state']}")
    outcome.session = ""
    return outcome


# --- two hosts


def two_hosts_spread_then_one_lost(drill: Drill, small: str, big: str) -> Outcome:
    """Three starts at once spread over the hosts by free slots and boots (the big host takes
    two, then is busy booting, so the third goes to the small one); the big host is lost: its
    learners are told, a new start goes to the small host; the big host returns and its
    leftovers are reaped."""
    outcome = Outcome("two hosts: spread, lose one")
    stack = drill.stack
    clients = [drill.learner() for _ in range(3)]
    started = [drill.start(c) for c in clients]
    placed = {sid: stack.row(sid).host for sid in started}
    counts = {host: list(placed.values()).count(host) for host in (small, big)}
    outcome.phase = f"placed {counts}"
    outcome.expect(counts == {big: 2, small: 1}, f"placement {counts}, expected 2 on {big} and 1 on {small}")
    for client, sid in zip(clients, started, strict=True):
        lab_stack.wait_for_state(client, sid, {S.READY}, BOOT_S)
    on_big = [sid for sid in started if placed[sid] == big]
    # The pages of the big host's learners stay open through the loss.
    pages = {sid: open_events(client, sid)[0] for client, sid in zip(clients, started, strict=True) if sid in on_big}

    outcome.hit()
    stack.hosts[big].lose()
    stack.lost.add(big)
    servers.wait_for(lambda: not stack.hosts[big].advertised(stack.redis_url), 60, f"{big}'s advert to expire")
    newcomer = drill.learner()
    fresh = drill.start(newcomer)
    outcome.expect(stack.row(fresh).host == small, f"a new start went to {stack.row(fresh).host}")
    lab_stack.wait_for_state(newcomer, fresh, {S.READY}, BOOT_S)
    # The lost host's learners are told (the reconciler's lost-host sweep).
    deadline = time.monotonic() + RECOVERY_S
    while time.monotonic() < deadline and any(stack.row(sid).state not in ENDED for sid in on_big):
        stack.reconcile()
        time.sleep(2)
    for client, sid in zip(clients, started, strict=True):
        if sid in on_big:
            with pages[sid] as page:
                try:
                    next_event(page, lambda m: m.get("type") == "session" and m["session"]["state"] in ENDED, 10)
                except AssertionError as exc:
                    outcome.problems.append(f"{sid}'s open page was not told its host is lost: {exc}")
            session = drill.learner_sees_clear_state(outcome, client, sid)
            outcome.expect(session["state"] in ENDED and session["error"], f"{sid} on the lost host: {session}")

    # It comes back: what was left on it is reaped and recorded.
    stack.hosts[big].start_workers(stack.hosts[big].env)
    stack.lost.discard(big)
    for client, sid in [*zip(clients, started, strict=True), (newcomer, fresh)]:
        if stack.row(sid).state not in ENDED:
            client.request("POST", f"/api/sessions/{sid}/stop")
    drill.settle(outcome)
    return outcome


# --- the whole matrix


def run_matrix(drill: Drill, two_hosts: tuple[str, str] | None, report: Callable[[Outcome], None]) -> list[Outcome]:
    """Every fault once, chaining sessions where a case leaves one ready (each boot costs ~8 s of CPU)."""
    outcomes: list[Outcome] = []

    def record(outcome: Outcome) -> Outcome:
        outcomes.append(outcome)
        report(outcome)
        return outcome

    first = record(killed_while_requested(drill))
    if first.session:
        checked = record(killed_while_checking(drill, first.session))
        record(killed_while_reverting(drill, checked.session))
    stop_all(drill)  # a small host (two slots) must have room for what follows
    record(killed_while_provisioning(drill))
    sid = record(killed_while_checkpointing(drill)).session or drill.ready_session()[1]
    for case in (
        libvirtd_restarted,
        libvirtd_killed_mid_check,
        redis_restarted,
        web_worker_killed,
        redis_lost_its_data,
    ):
        sid = record(case(drill, sid)).session or drill.ready_session()[1]
    record(killed_while_destroying(drill, sid))
    stop_all(drill)
    if two_hosts is not None:
        record(two_hosts_spread_then_one_lost(drill, *two_hosts))
    return outcomes
