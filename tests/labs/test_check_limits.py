"""Checks are bounded: one in flight per session, a rate per learner, and the in-flight marker is
released however the check ends (verdict, error, retries exhausted) or, should its worker die,
when it expires."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from pytest_django import Settings

from labs.catalog import LocalizedText
from labs.host import tasks as host_tasks
from labs.host import verify, vmwork
from labs.models import LabSession, StepResult
from labs.services import limits
from labs.states import SessionState
from tests import lab_stack, servers
from tests.labs.conftest import SentTask

S = SessionState
pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
HOST = "checkhost"


@pytest.fixture
def lab_world(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """A private Redis (cache, broker, adverts) with one advertised host, and the test lab."""
    with servers.private_redis() as url:
        lab_stack.point_settings_at_redis(settings, url)
        settings.CONTENT_DIR = tmp_path / "content"
        slug = lab_stack.write_test_lab(settings.CONTENT_DIR)
        lab_stack.advertise_host(HOST)
        yield slug


@pytest.fixture
def session(alice: User, lab_world: str) -> LabSession:
    """Alice's lab, ready at step 1 with its checkpoint taken."""
    now = timezone.now()
    return LabSession.objects.create(
        user=alice, lab_slug=lab_world, state=S.READY, host=HOST, vm_id="v", checkpoints=[1],
        ready_at=now, expires_at=now + timedelta(minutes=30),
    )  # fmt: skip


def check(user: User, session_id: str, language: str = "en") -> Any:
    client = Client(headers={"accept-language": language})
    client.force_login(user)
    return client.post(f"/api/sessions/{session_id}/check", {"step": 1}, content_type="application/json")


def claim_sent(sent_tasks: list[SentTask]) -> str:
    """The in-flight claim the last check carried to the host's check queue."""
    task = sent_tasks[-1]
    assert (task.name, task.queue) == ("labs.host.tasks.check_session_step", f"host.{HOST}.checks")
    return str(task.args[2])


# --- The web side ---------------------------------------------------------------------------------


def test_a_second_check_while_one_runs_is_refused_with_429(
    session: LabSession, alice: User, sent_tasks: list[SentTask]
) -> None:
    assert check(alice, session.id).status_code == 202
    again = check(alice, session.id)
    assert again.status_code == 429
    assert again.json()["detail"] == (
        "A check of this lab is still running. Its result will appear here; check again after it."
    )
    assert len(sent_tasks) == 1, "the second click sends no work to the host"


def test_the_refusal_is_in_the_learners_language(session: LabSession, alice: User, sent_tasks: list[SentTask]) -> None:
    check(alice, session.id)
    assert "检查仍在进行" in check(alice, session.id, "zh-hans").json()["detail"]


def test_a_check_is_accepted_again_once_the_host_released_the_first(
    session: LabSession, alice: User, sent_tasks: list[SentTask]
) -> None:
    check(alice, session.id)
    limits.release_check(session.id, claim_sent(sent_tasks))
    assert check(alice, session.id).status_code == 202
    assert len(sent_tasks) == 2


def test_checks_per_learner_are_rate_limited(
    session: LabSession, alice: User, settings: Settings, sent_tasks: list[SentTask]
) -> None:
    settings.LABS_CHECK_RATE, settings.LABS_CHECK_RATE_WINDOW_S = 3, 60
    for _ in range(3):
        assert check(alice, session.id).status_code == 202
        limits.release_check(session.id, claim_sent(sent_tasks))  # the host finished it
    refused = check(alice, session.id)
    assert refused.status_code == 429
    assert refused.json()["detail"] == ("Too many checks: at most 3 every 60 seconds. Wait a moment, then check again.")
    assert len(sent_tasks) == 3
    assert not limits.check_running(session.id), "a refused check leaves no marker behind"


def test_a_learner_whose_checks_used_their_time_is_refused_and_others_are_not(
    session: LabSession, alice: User, bob: User, sent_tasks: list[SentTask], settings: Settings
) -> None:
    settings.LABS_CHECK_SECONDS = 20
    limits.charge_check_time(alice.id, 12.0)  # what the host counted for her earlier checks
    assert check(alice, session.id).status_code == 202, "within the budget"
    limits.release_check(session.id, claim_sent(sent_tasks))
    limits.charge_check_time(alice.id, 9.5)  # that check stalled in her guest
    refused = check(alice, session.id)
    assert refused.status_code == 429
    assert refused.json()["detail"] == (
        "Your checks have used 20 seconds of checking time in the last 60 seconds, the most one learner may use. "
        "Wait a moment, then check again."
    )
    assert "检查时间" in check(alice, session.id, "zh-hans").json()["detail"]
    assert len(sent_tasks) == 1, "nothing more reached the host's check workers"
    assert not limits.check_running(session.id)
    assert limits.check_time_spent(bob.id) == 0.0


def test_refused_in_flight_checks_do_not_use_up_the_rate(
    session: LabSession, alice: User, settings: Settings, sent_tasks: list[SentTask]
) -> None:
    settings.LABS_CHECK_RATE = 2
    assert check(alice, session.id).status_code == 202
    for _ in range(5):  # impatient clicks while the first check runs
        assert check(alice, session.id).status_code == 429
    limits.release_check(session.id, claim_sent(sent_tasks))
    assert check(alice, session.id).status_code == 202


def test_the_rate_is_per_learner(
    session: LabSession, alice: User, bob: User, lab_world: str, settings: Settings, sent_tasks: list[SentTask]
) -> None:
    settings.LABS_CHECK_RATE = 1
    now = timezone.now()
    bobs = LabSession.objects.create(
        user=bob, lab_slug=lab_world, state=S.READY, host=HOST, vm_id="w", checkpoints=[1], ready_at=now,
        expires_at=now + timedelta(minutes=30),
    )  # fmt: skip
    assert check(alice, session.id).status_code == 202
    assert check(bob, bobs.id).status_code == 202, "alice's checks do not count against bob"


def test_a_marker_of_a_dead_worker_expires(
    session: LabSession, alice: User, settings: Settings, sent_tasks: list[SentTask]
) -> None:
    settings.LABS_CHECK_INFLIGHT_TTL_S = 1
    assert check(alice, session.id).status_code == 202  # and no worker ever releases it
    assert check(alice, session.id).status_code == 429
    time.sleep(1.5)
    assert check(alice, session.id).status_code == 202


def test_an_old_claim_cannot_release_a_newer_check(session: LabSession) -> None:
    old = limits.claim_check(session.id)
    assert old is not None
    limits.release_check(session.id, old)
    new = limits.claim_check(session.id)
    assert new is not None
    limits.release_check(session.id, old)  # the first check's task ends late
    assert limits.check_running(session.id)
    limits.release_check(session.id, new)
    assert not limits.check_running(session.id)


# --- The host side releases the marker however the check ends ----------------------------------


class FakeVM:
    def wait_ready(self, timeout_s: float) -> float:
        return 0.0


class FakeHypervisor:
    def vm(self, vm_id: str) -> FakeVM:
        return FakeVM()


@contextlib.contextmanager
def fake_hypervisor() -> Iterator[FakeHypervisor]:
    yield FakeHypervisor()


def verdict(passed: bool) -> verify.CheckResult:
    message = LocalizedText(en="not yet", zh="还没有")
    return verify.CheckResult(passed, [verify.AssertionResult(passed, "guest", message, "seen", True)], 0.1)


def test_a_failed_verdict_releases_the_marker_before_the_page_is_told(
    session: LabSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    claim = limits.claim_check(session.id)
    assert claim is not None
    running_when_pushed: list[bool] = []
    monkeypatch.setattr(vmwork, "hypervisor", fake_hypervisor)
    monkeypatch.setattr(verify, "run_check", lambda vm, step, max_output: verdict(False))
    monkeypatch.setattr(vmwork, "push_session", lambda sid: running_when_pushed.append(limits.check_running(sid)))
    result = host_tasks.check_session_step.apply(args=(session.id, 1, claim))
    assert result.successful()
    assert running_when_pushed == [False], "a learner who sees the verdict may click again at once"
    result_row = StepResult.objects.get(session=session)
    assert result_row.details[0]["trusts_guest"] is True


def test_a_check_that_errors_releases_the_marker(session: LabSession, monkeypatch: pytest.MonkeyPatch) -> None:
    claim = limits.claim_check(session.id)
    assert claim is not None

    def broken(vm: Any, step: Any, max_output: int) -> verify.CheckResult:
        raise RuntimeError("a bug in the check")

    monkeypatch.setattr(vmwork, "hypervisor", fake_hypervisor)
    monkeypatch.setattr(verify, "run_check", broken)
    monkeypatch.setattr(vmwork, "end_here", lambda *args, **kwargs: True)  # no VM to tear down
    result = host_tasks.check_session_step.apply(args=(session.id, 1, claim))
    assert result.failed()
    assert not limits.check_running(session.id)


def test_a_check_the_session_no_longer_needs_releases_the_marker(session: LabSession) -> None:
    claim = limits.claim_check(session.id)
    assert claim is not None
    LabSession.objects.filter(pk=session.pk).update(current_step=2, checkpoints=[1, 2])  # passed meanwhile
    assert host_tasks.check_session_step.apply(args=(session.id, 1, claim)).successful()
    assert not limits.check_running(session.id)


def test_a_check_whose_host_is_unreachable_keeps_the_marker_while_retrying_then_releases_it(
    session: LabSession, settings: Settings, sent_tasks: list[SentTask]
) -> None:
    settings.LIBVIRT_URI = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    claim = limits.claim_check(session.id)
    assert claim is not None
    LabSession.objects.filter(pk=session.pk).update(checkpoints=[])
    with pytest.raises(vmwork.CheckpointPending):  # a retry: the task is not over
        vmwork.check(session.id, 1, claim)
    assert limits.check_running(session.id)
    LabSession.objects.filter(pk=session.pk).update(checkpoints=[1])
    result = host_tasks.check_session_step.apply(args=(session.id, 1, claim))  # eager: retries at once
    assert result.failed()
    assert not limits.check_running(session.id)
    session.refresh_from_db()
    assert session.state in {S.FAILED, S.DESTROYED}
