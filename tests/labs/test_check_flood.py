"""A flood of checks cannot delay another learner's start: on the real stack (uvicorn, the host
agent and the host's check worker, real VMs), checks wait on their own queue `host.<name>.checks`
while starts and teardowns go to the host agent's `host.<name>`."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests import lab_stack, servers

pytestmark = [pytest.mark.vm, pytest.mark.slow]
SLOW_LAB = "slow-check"
FLOOD = 12
# Each flooding check sleeps this long in the guest: over a minute of checks in all, most of it
# waiting, so that what is measured is the queue, not the CPU the checks themselves take.
CHECK_S = 5


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab_stack.LabStack]:
    with lab_stack.lab_stack(tmp_path_factory.mktemp("flood")) as running:
        yield running


def add_slow_lab(stack: lab_stack.LabStack) -> None:
    """The test lab, with a step-1 check that sleeps before it fails (the catalog reloads it)."""
    labs = Path(stack.env["VIRTLAB_CONTENT_DIR"]) / "labs"
    shutil.copytree(labs / stack.slug, labs / SLOW_LAB)
    meta = yaml.safe_load((labs / SLOW_LAB / "lab.yaml").read_text())
    (labs / SLOW_LAB / "lab.yaml").write_text(yaml.safe_dump({**meta, "slug": SLOW_LAB}, allow_unicode=True))
    step_file = labs / SLOW_LAB / "steps" / "01-hello" / "step.yaml"
    step = yaml.safe_load(step_file.read_text())
    step["check"][0]["guest"]["run"] = f"sleep {CHECK_S}; test -f /root/never"
    step_file.write_text(yaml.safe_dump(step, allow_unicode=True))


def start_and_time(client: lab_stack.LabClient, lab: str) -> tuple[str, float]:
    started = time.monotonic()
    status, body = client.request("POST", "/api/sessions", {"lab": lab})
    assert status == 201, body
    lab_stack.wait_for_state(client, body["id"], {"ready"}, 180)
    return body["id"], time.monotonic() - started


def test_a_flood_of_checks_does_not_delay_another_learners_start(stack: lab_stack.LabStack) -> None:
    add_slow_lab(stack)
    bob, alice = stack.client("bob"), stack.client("alice")
    bobs, usual_s = start_and_time(bob, SLOW_LAB)  # a cold boot with nothing else going on
    # That cold start asked for the lab's template: the host agent builds it (a boot) once bob is
    # ready. Let it finish, so that what alice's start shares the host with is the checks alone.
    servers.wait_for(lambda: lab_stack.lab_templates(stack, SLOW_LAB), 180, "the slow lab's template")

    # Bob clicks Check as fast as he can: one runs, the others are refused at the door.
    answers = [bob.request("POST", f"/api/sessions/{bobs}/check", {"step": 1})[0] for _ in range(30)]
    assert answers.count(202) == 1
    assert answers.count(429) == 29

    # What a class's worth of learners checking at once puts on the host (the web limits allow one
    # in flight per session, so the flood is sent as their checks would arrive).
    stack.shell(
        "from labs import task_calls\n"
        f"for _ in range({FLOOD}):\n"
        f"    task_calls.check_session_step.on({stack.host!r}, {bobs!r}, 1)\n"
    )
    alices, flooded_s = start_and_time(alice, stack.slug)
    done = stack.shell(f"from labs.models import StepResult as R; print(R.objects.filter(session_id={bobs!r}).count())")
    checks_left = FLOOD + 1 - int(done.split()[-1])  # the shell prints a banner first
    print(
        f"\nalice's start: {flooded_s:.1f} s with {FLOOD} x {CHECK_S} s of checks queued "
        f"({checks_left} still waiting when she was ready); bob's start alone: {usual_s:.1f} s"
    )
    # Had the checks shared the agent's queue, alice's start would have waited behind all of them
    # (12 x ~6 s: 79 s measured, against 13 s on their own queue). The checks still cost some CPU
    # (each runs in bob's VM): a margin for that.
    assert flooded_s < usual_s * 1.5 + 5, f"alice waited {flooded_s:.1f} s (a start alone: {usual_s:.1f} s)"
    assert checks_left > 0, "the flood must outlast alice's start for this test to mean anything"
    for client, sid in ((alice, alices), (bob, bobs)):
        client.request("POST", f"/api/sessions/{sid}/stop")
