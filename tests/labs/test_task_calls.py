"""Typed task calls: every task the code sends is registered, takes the declared arguments, goes to
its queue only when the transaction commits, and a host task that cannot reach libvirt retries,
then fails its session with a message instead of leaving it stuck."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Task
from django.contrib.auth.models import User
from django.db import transaction
from pytest_django import Settings

from classes import task_calls as classes_task_calls
from labs import services, task_calls
from labs.host import host_agent
from labs.host import tasks as host_tasks
from labs.models import LabSession
from labs.states import SessionState
from portal.celery import app
from tests import lab_stack, servers
from tests.labs.conftest import SentTask

S = SessionState
pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
DECLARED = [*task_calls.HOST_TASKS, *task_calls.WEB_TASKS]


@pytest.fixture
def private_broker(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """A private Redis as broker (no worker listens), and the test lab in the catalog."""
    with servers.private_redis() as url:
        lab_stack.point_settings_at_redis(settings, url)
        settings.CONTENT_DIR = tmp_path / "content"
        yield lab_stack.write_test_lab(settings.CONTENT_DIR)


def registered(name: str) -> Task[Any, Any]:
    app.loader.import_default_modules()  # what a worker imports at start: CELERY_IMPORTS, autodiscovery
    return app.tasks[name]


def parameters(signature: inspect.Signature) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.annotation, p.kind) for p in signature.parameters.values()]


@pytest.mark.parametrize("call", DECLARED, ids=lambda call: call.name)
def test_every_declared_task_is_registered_with_the_declared_arguments(call: task_calls.TaskCall[Any]) -> None:
    task = registered(call.name)
    assert parameters(inspect.signature(task.run)) == parameters(call.signature)


def test_every_labs_task_is_declared() -> None:
    registered(task_calls.reconcile_all.name)
    ours = {name for name in app.tasks if name.startswith("labs.")}
    assert ours == {call.name for call in DECLARED}


def test_beat_sends_declared_tasks_to_their_queue() -> None:
    declared = [*DECLARED, *classes_task_calls.WEB_TASKS]
    assert app.conf.beat_schedule
    for name, entry in app.conf.beat_schedule.items():
        call = next((c for c in declared if c.name == entry["task"]), None)
        assert call is not None, f"beat entry {name} sends {entry['task']}, which no task_calls module declares"
        assert isinstance(call, task_calls.WebTaskCall)
        assert entry["options"]["queue"] == task_calls.WEB_QUEUE


def test_workers_import_the_host_tasks_and_web_processes_do_not_need_to() -> None:
    assert "labs.host.tasks" in app.conf.imports
    assert all(call.name.startswith("labs.host.tasks.") for call in task_calls.HOST_TASKS)
    assert all(call.name.startswith("labs.tasks.") for call in task_calls.WEB_TASKS)


# Each host task's queue on host "h1": VM lifecycle work on the host agent's queue, checks on the
# check worker's, so that a flood of checks cannot delay a start or a teardown.
HOST_QUEUES = {
    task_calls.provision_session: "host.h1",
    task_calls.check_session_step: "host.h1.checks",
    task_calls.revert_session: "host.h1",
    task_calls.destroy_session_vm: "host.h1",
    task_calls.fill_pool: "host.h1",
    task_calls.prepare_template: "host.h1",
    task_calls.fill_reservation: "host.h1",
    task_calls.release_reservation: "host.h1",
    task_calls.reconcile_host: "host.h1",
}


def test_every_host_task_has_its_queue() -> None:
    assert set(HOST_QUEUES) == set(task_calls.HOST_TASKS)
    assert {call: call.queue("h1") for call in task_calls.HOST_TASKS} == HOST_QUEUES


def test_host_call_goes_to_the_host_queue_on_commit(private_broker: str, sent_tasks: list[SentTask]) -> None:
    with transaction.atomic():
        task_calls.revert_session.on("h1", "s-abc", 3)
        assert sent_tasks == [], "nothing leaves before the transaction commits"
    assert sent_tasks == [SentTask("labs.host.tasks.revert_session", "host.h1", ("s-abc", 3), {})]


def test_check_goes_to_the_hosts_check_queue(private_broker: str, sent_tasks: list[SentTask]) -> None:
    task_calls.check_session_step.on("h1", "s-abc", 3, "claim-token")
    assert sent_tasks == [
        SentTask("labs.host.tasks.check_session_step", "host.h1.checks", ("s-abc", 3, "claim-token"), {})
    ]


class FakeConsumer:
    """What Celery's worker_ready passes: the consumer, whose app knows the queues given by -Q."""

    def __init__(self, *queues: str):
        self.app = SimpleNamespace(amqp=SimpleNamespace(queues=SimpleNamespace(consume_from=dict.fromkeys(queues))))


def test_only_the_host_agent_starts_the_relay_and_adverts_not_the_check_worker(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.VIRTLAB_HOST_NAME = "h1"
    started: list[str] = []
    monkeypatch.setattr(host_agent, "start", lambda: started.append("agent"))
    host_tasks._start_host_agent(sender=FakeConsumer("host.h1.checks"))
    assert started == [], "a second console relay would fight the agent's for every console"
    host_tasks._start_host_agent(sender=FakeConsumer("host.h1", "web"))
    assert started == ["agent"]


def test_web_call_goes_to_the_web_queue(private_broker: str, sent_tasks: list[SentTask]) -> None:
    task_calls.place_queued_sessions.send()
    assert sent_tasks == [SentTask("labs.tasks.place_queued_sessions", "web", (), {})]


def test_rolled_back_transaction_sends_nothing(private_broker: str, sent_tasks: list[SentTask]) -> None:
    def failing_request() -> None:
        with transaction.atomic():
            task_calls.destroy_session_vm.on("h1", "s-abc")
            raise RuntimeError("the request failed after deciding to send")

    with pytest.raises(RuntimeError):
        failing_request()
    assert sent_tasks == []


def test_starting_a_lab_sends_provision_to_the_chosen_host(
    private_broker: str, alice: User, sent_tasks: list[SentTask]
) -> None:
    lab_stack.advertise_host("h1")
    session = services.start_lab(alice, private_broker)
    assert sent_tasks == [SentTask("labs.host.tasks.provision_session", "host.h1", (session.id,), {})]


def test_stopping_a_lab_sends_teardown_to_its_host_and_refills_from_the_queue(
    private_broker: str, alice: User, sent_tasks: list[SentTask]
) -> None:
    session = LabSession.objects.create(user=alice, lab_slug=private_broker, state=S.READY, host="h2", vm_id="s-x")
    services.stop_lab(session)
    assert [(t.name, t.queue, t.args) for t in sent_tasks] == [
        ("labs.host.tasks.destroy_session_vm", "host.h2", (session.id,)),
        ("labs.tasks.place_queued_sessions", "web", ()),
    ]


def test_provision_without_libvirt_retries_then_fails_the_session_on_its_host(
    private_broker: str, alice: User, settings: Settings, sent_tasks: list[SentTask]
) -> None:
    settings.LIBVIRT_URI = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    session = LabSession.objects.create(user=alice, lab_slug=private_broker, state=S.REQUESTED, host="h1")
    result = host_tasks.provision_session.apply(args=(session.id,))  # eager: retries run at once
    assert result.failed()
    assert "HostUnreachable" in str(result.traceback)
    session.refresh_from_db()
    # Failed and torn down here (no VM was made), not left "requested" until the reconciler gives up.
    assert session.state == S.DESTROYED
    assert (
        session.error == "The lab's host could not start your VM. Please start the lab again."
    )  # the path is logged only
    assert [t.name for t in sent_tasks] == ["labs.tasks.place_queued_sessions"], "no teardown sent back to the host"
