"""Lab pages: the catalog and a lab's page, and what each kind of visitor sees on them."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from pytest_django import Settings

from labs.models import LabSession
from labs.states import SessionState
from tests import lab_stack

pytestmark = pytest.mark.django_db


@pytest.fixture
def lab_world(settings: Settings, tmp_path: Path) -> str:
    settings.CONTENT_DIR = tmp_path / "content"
    return lab_stack.write_test_lab(settings.CONTENT_DIR)


def test_catalog_lists_lab_cards(client: Client, lab_world: str) -> None:
    html = client.get("/labs/").content.decode()
    assert "Relay check" in html
    assert f'href="/labs/{lab_world}/"' in html
    assert "tiny" in html


def test_catalog_in_chinese_shows_chinese_titles(client: Client, lab_world: str) -> None:
    client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"})
    assert "中继检查" in client.get("/labs/").content.decode()


def test_lab_page_renders_steps_hints_and_terminal(client: Client, lab_world: str) -> None:
    html = client.get(f"/labs/{lab_world}/").content.decode()
    assert 'id="step-1"' in html
    assert 'id="step-2"' in html
    assert "Show solution" in html
    assert "Try: <code>echo hi &gt; /root/hello.txt</code>" in html  # hints are Markdown, rendered
    assert "vendor/xterm/xterm.js" in html
    assert "labs/lab.js" in html
    assert "Log in to start this lab" in html  # anonymous visitors get no Start button


def test_unknown_lab_page_is_404(client: Client, lab_world: str) -> None:
    assert client.get("/labs/nope/").status_code == 404


def test_lab_page_shows_the_owners_running_session_only(client: Client, alice: User, bob: User,
                                                       lab_world: str) -> None:  # fmt: skip
    session = LabSession.objects.create(user=alice, lab_slug=lab_world, state=SessionState.READY, host="h")
    client.force_login(alice)
    assert session.id in client.get(f"/labs/{lab_world}/").content.decode()
    other = Client()
    other.force_login(bob)
    assert session.id not in other.get(f"/labs/{lab_world}/").content.decode()
    assert session.id not in Client().get(f"/labs/{lab_world}/").content.decode()
