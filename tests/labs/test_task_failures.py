"""A host task that fails tells the learner what happened in their language, never the exception
(which names internal hosts, sockets and paths); the detail goes to the log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from pytest_django import Settings

from labs.host import tasks as host_tasks
from labs.models import LabSession
from labs.states import SessionState
from tests import lab_stack, servers

S = SessionState
pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
HOST = "failhost"
# libvirt's own words for this carry the socket's path: what a learner must not be shown.
SOCKET = "/nonexistent/virtlab-internal/libvirt-sock"


@pytest.fixture
def session(settings: Settings, tmp_path: Path, alice: User) -> Iterator[LabSession]:
    """Alice's start, placed on a host whose libvirtd does not answer."""
    with servers.private_redis() as url:
        lab_stack.point_settings_at_redis(settings, url)
        settings.CONTENT_DIR = tmp_path / "content"
        slug = lab_stack.write_test_lab(settings.CONTENT_DIR)
        lab_stack.advertise_host(HOST)
        settings.LIBVIRT_URI = f"qemu+unix:///system?socket={SOCKET}"
        yield LabSession.objects.create(user=alice, lab_slug=slug, state=S.REQUESTED, host=HOST)


def error_shown(user: User, session_id: str, language: str) -> str:
    client = Client(headers={"accept-language": language})
    client.force_login(user)
    return str(client.get(f"/api/sessions/{session_id}").json()["error"])


def test_a_start_that_fails_for_good_tells_the_learner_and_logs_the_detail(
    session: LabSession, alice: User, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="labs.host.tasks"):
        result = host_tasks.provision_session.apply(args=(session.id,))  # eager: retries at once, then gives up
    assert result.failed()
    session.refresh_from_db()
    assert session.state in {S.FAILED, S.DESTROYED}
    assert error_shown(alice, session.id, "en") == "The lab's host could not start your VM. Please start the lab again."
    assert error_shown(alice, session.id, "zh-hans") == "实验主机无法启动你的虚拟机。请重新开始实验。"
    assert SOCKET not in session.error
    logged = [r for r in caplog.records if r.name == "labs.host.tasks" and session.id in r.getMessage()]
    assert any(SOCKET in r.getMessage() for r in logged), "the operator gets the detail"


def test_a_start_whose_vm_cannot_be_made_names_no_path(
    session: LabSession, alice: User, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """libvirt answers, but the VM cannot be made (here: no guest image where the host looks): the
    learner reads a message in their language; the path in the error goes to the log only."""
    settings.LIBVIRT_URI = "qemu:///system"
    settings.GUEST_IMAGE_DIR = missing = tmp_path / "virtlab-internal-no-image"
    with caplog.at_level(logging.ERROR, logger="labs.host.vmwork"):
        host_tasks.provision_session.apply(args=(session.id,))
    session.refresh_from_db()
    assert session.state in {S.FAILED, S.DESTROYED}
    assert error_shown(alice, session.id, "en") == "Your VM could not be started. Please start the lab again."
    assert error_shown(alice, session.id, "zh-hans") == "你的虚拟机无法启动。请重新开始实验。"
    assert str(missing) not in session.error
    assert any(str(missing) in r.getMessage() + str(r.exc_info) for r in caplog.records), "the operator gets it"
