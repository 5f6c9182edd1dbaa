"""What a session's checks may leave behind is bounded, on a real VM: past the session's disk
budget (its disks and checkpoints, measured on the host) a pass takes no checkpoint and says so in
both languages while the lab goes on; and only the latest LABS_STEP_RESULTS_KEPT results of a step
are stored."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from pytest_django import Settings

from labs.host import tasks as host_tasks
from labs.host import verify, vmwork
from labs.hypervisor import VM
from labs.models import LabSession, StepResult
from labs.services import limits
from labs.services.catalog import require_lab
from labs.states import SessionState
from tests import lab_stack, servers

S = SessionState
pytestmark = [pytest.mark.vm, pytest.mark.django_db(transaction=True)]
HOST = "budgethost"
SLUG = "three-files"


def write_lab(content_dir: Path) -> None:
    """Three steps on the `tiny` profile: make /root/a, then b, then c."""
    lab = content_dir / "labs" / SLUG
    (content_dir / "docs" / "en").mkdir(parents=True, exist_ok=True)
    names = ["01-a", "02-b", "03-c"]
    for name in names:
        step = lab / "steps" / name
        step.mkdir(parents=True)
        (step / "en.md").write_text(f"Make /root/{name[-1]}.\n")
        (step / "zh.md").write_text(f"创建 /root/{name[-1]}。\n")
        data = {
            "title": {"en": f"Step {name}", "zh": f"步骤 {name}"},
            "check": [{"guest": {"run": f"test -f /root/{name[-1]}"}, "message": {"en": "not yet", "zh": "还没有"}}],
            "hints": {"en": ["touch it"], "zh": ["touch 它"]},
            "solution": [f"touch /root/{name[-1]}"],
        }
        (step / "step.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
    meta = {
        "slug": SLUG, "title": {"en": "Three files", "zh": "三个文件"}, "summary": {"en": "Files.", "zh": "文件。"},
        "duration_min": 5, "difficulty": "intro", "profile": "tiny", "docs": [], "steps": names,
    }  # fmt: skip
    (lab / "lab.yaml").write_text(yaml.safe_dump(meta, allow_unicode=True))


@pytest.fixture
def session(settings: Settings, tmp_path: Path, alice: User, booted_vm: Callable[[str], VM]) -> Iterator[LabSession]:
    """Alice's lab on a real `tiny` VM, ready at step 1 with its checkpoint taken (as provisioning leaves it)."""
    with servers.private_redis() as url:
        lab_stack.point_settings_at_redis(settings, url)
        settings.CONTENT_DIR = tmp_path / "content"
        write_lab(settings.CONTENT_DIR)
        lab_stack.advertise_host(HOST)
        vm = booted_vm("tiny")
        vm.snapshot(vmwork.checkpoint(1))
        now = timezone.now()
        yield LabSession.objects.create(
            user=alice, lab_slug=SLUG, state=S.READY, host=HOST, vm_id=vm.session_id, checkpoints=[1],
            ready_at=now, expires_at=now + timedelta(minutes=30),
        )  # fmt: skip


def solve_and_check(session: LabSession, vm: VM, step: int) -> LabSession:
    """Do the step in the guest, then run its check as the host's check worker would."""
    verify.run_solution(vm, require_lab(SLUG).step(step))
    check_now(session, step)
    session.refresh_from_db()
    return session


def test_past_its_disk_budget_a_pass_takes_no_checkpoint_says_why_and_the_lab_goes_on(
    session: LabSession, settings: Settings, alice: User
) -> None:
    with vmwork.hypervisor() as hv:
        vm = hv.vm(session.vm_id)
        used = vmwork.disk_used_mib(vm)
        assert used >= 40, f"step 1's checkpoint (the VM's RAM) counts on the host: {used} MiB"

        settings.LABS_DISK_PER_SESSION_MIB = used + 100_000  # within budget: checkpointed as usual
        session = solve_and_check(session, vm, 1)
        assert (session.state, session.current_step, session.checkpoints) == (S.READY, 2, [1, 2])
        assert vm.list_snapshots() == ["step-1", "step-2"]
        assert not any(d.get("note") for d in StepResult.objects.get(session=session, step=1).details)

        grown = vmwork.disk_used_mib(vm)
        assert grown > used, "step 2's checkpoint grew the session's disks"
        settings.LABS_DISK_PER_SESSION_MIB = grown  # now at its budget
        session = solve_and_check(session, vm, 2)
        assert (session.state, session.current_step, session.checkpoints) == (S.READY, 3, [1, 2])
        assert vm.list_snapshots() == ["step-1", "step-2"], "no checkpoint past the budget"
        assert vm.exec("test -f /root/b").exit_code == 0, "the VM went on as it was"

        # The learner is told, on the verdict, in their language.
        client = Client(headers={"accept-language": "zh-hans"})
        client.force_login(alice)
        result = client.get(f"/api/sessions/{session.id}").json()["results"]["2"]
        assert result["passed"] is True
        notes = [d for d in result["details"] if d["note"]]
        assert len(notes) == 1, result
        assert f"over its {grown} MiB budget" in notes[0]["en"]
        assert "配额" in notes[0]["zh"]
        assert str(grown) in notes[0]["zh"]
        # Going back to step 3's beginning is refused with a reason; step 2's is still there.
        refused = client.post(f"/api/sessions/{session.id}/goto", {"step": 3}, content_type="application/json")
        assert refused.status_code == 409, refused.content
        assert "3" in refused.json()["detail"]

        # The lab goes on: its next checks run as any other; only the latest few are stored.
        settings.LABS_STEP_RESULTS_KEPT = 3
        for _ in range(4):
            check_now(session, 3)
        verify.run_solution(vm, require_lab(SLUG).step(3))
        check_now(session, 3)
    session.refresh_from_db()
    assert session.state == S.DESTROYED, "completed, and its VM gone"
    kept = list(StepResult.objects.filter(session=session, step=3).order_by("created_at", "id"))
    assert [r.passed for r in kept] == [False, False, True], "the latest 3, the pass among them"
    assert limits.check_time_spent(alice.id) > 0, "the host counted the checks' time against their learner"


def check_now(session: LabSession, step: int) -> None:
    claim = limits.claim_check(session.id)
    assert host_tasks.check_session_step.apply(args=(session.id, step, claim)).successful()


def test_pruning_keeps_other_steps_and_sessions(alice: User, settings: Settings) -> None:
    settings.LABS_STEP_RESULTS_KEPT = 2
    mine, other = (LabSession.objects.create(user=alice, lab_slug=SLUG, state=S.READY, host=HOST) for _ in "12")
    for target, step in ((mine, 1), (mine, 2), (other, 1)):
        for _ in range(4):
            StepResult.objects.create(session=target, step=step, passed=False)
    newest = StepResult.objects.filter(session=mine, step=1).order_by("-created_at", "-id")[:2]
    assert limits.prune_step_results(mine.id, 1) == 2
    assert set(StepResult.objects.filter(session=mine, step=1)) == set(newest)
    assert StepResult.objects.filter(session=mine, step=2).count() == 4
    assert StepResult.objects.filter(session=other).count() == 4
