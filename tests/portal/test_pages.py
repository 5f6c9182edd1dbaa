from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_home_page_has_navigation(client: Client) -> None:
    html = client.get("/").content.decode()
    for label in ("Docs", "Labs", "Classes", "Search", "Sign up"):
        assert label in html


def test_language_switch_to_chinese(client: Client) -> None:
    resp = client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"})
    assert resp.status_code == 302
    html = client.get("/").content.decode()
    assert '<html lang="zh-hans"' in html
    assert "文档" in html
    assert "实验" in html


def test_static_vendor_assets_are_served(client: Client) -> None:
    # htmx comes from npm (package-lock.json) via scripts/assets.sh, not from the repo.
    from django.contrib.staticfiles import finders

    assert finders.find("vendor/htmx/htmx.min.js")
    assert finders.find("vendor/xterm/xterm.js")
