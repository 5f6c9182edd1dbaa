"""`manage.py classes …` for scripting: the role, a class's life, status and export."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from classes.models import LabClass
from portal.roles import INSTRUCTOR, has_role

pytestmark = [pytest.mark.django_db]


def run(*args: str) -> str:
    out = StringIO()
    call_command("classes", *args, stdout=out)
    return out.getvalue()


def test_a_class_from_the_command_line(alice: User, lab_world: str, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="Only instructors"):
        run("create", "--owner", "alice", "--title", "CLI", "--lab", lab_world, "--seats", "2",
            "--ends", "2099-01-01T10:00")  # fmt: skip
    assert "alice is an instructor" in run("grant-instructor", "alice")
    assert has_role(alice, INSTRUCTOR)
    with pytest.raises(CommandError, match="room for 10"):
        run("create", "--owner", "alice", "--title", "CLI", "--lab", lab_world, "--seats", "11",
            "--starts", "2099-01-01T08:00", "--ends", "2099-01-01T10:00")  # fmt: skip
    with pytest.raises(CommandError, match="not a date"):
        run("create", "--owner", "alice", "--title", "CLI", "--lab", lab_world, "--seats", "1", "--ends", "soon")
    out = run("create", "--owner", "alice", "--title", "CLI", "--lab", lab_world, "--seats", "2",
              "--starts", "2099-01-01T08:00", "--ends", "2099-01-01T10:00")  # fmt: skip
    klass = LabClass.objects.get(title="CLI")
    assert f"class {klass.pk}" in out
    assert klass.invites.get().code in out
    assert klass.state == LabClass.State.SCHEDULED
    run("provision", str(klass.pk))
    status = json.loads(run("status", str(klass.pk), "--json"))
    assert status["state"] == "provisioning"
    assert (status["seats"], status["seats_ready"]) == (2, 0)
    assert status["steps"]["1"]["not_started"] == 0  # nobody joined yet
    run("export", str(klass.pk), "--format", "json", "--output", str(tmp_path / "out.json"))
    assert json.loads((tmp_path / "out.json").read_text())["class"]["id"] == klass.pk
    assert "ended" in run("end", str(klass.pk))
    assert run("export", str(klass.pk)).startswith("learner,seat,waiting,lab,step")
    run("revoke-instructor", "alice")
    alice = User.objects.get(pk=alice.pk)  # has_role reads the groups afresh
    assert not has_role(alice, INSTRUCTOR)
    with pytest.raises(CommandError, match="no class"):
        run("status", "999999")
