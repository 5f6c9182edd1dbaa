from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import User
from django.test import Client

pytestmark = pytest.mark.django_db


class NavLinks(HTMLParser):
    """The href of every link inside the page's <nav> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "nav":
            self.depth += 1
        elif tag == "a" and self.depth:
            self.hrefs.append(dict(attrs)["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "nav":
            self.depth -= 1


def nav_links(client: Client) -> list[str]:
    parser = NavLinks()
    parser.feed(client.get("/").content.decode())
    return parser.hrefs


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


@pytest.mark.parametrize("who", ["anonymous", "learner"])
def test_every_nav_link_answers_200(client: Client, alice: User, who: str) -> None:
    if who == "learner":
        client.force_login(alice)
    links = nav_links(client)
    assert {"/docs/", "/labs/", "/classes/", "/docs/search/"} <= set(links)
    assert ("/accounts/login/" in links) is (who == "anonymous")
    for href in links:
        resp = client.get(href)
        assert resp.status_code == 200, f"{href} answered {resp.status_code} to the {who} user"


def test_classes_page_offers_joining_with_a_code(client: Client) -> None:
    html = client.get("/classes/").content.decode()
    assert "Join a class" in html
    assert 'action="/classes/join"' in html
    assert "New class" not in html  # only instructors create classes (tests/classes/test_pages.py)
    assert 'data-nav="classes"' in html


def test_classes_page_in_chinese(client: Client) -> None:
    client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"})
    html = client.get("/classes/").content.decode()
    assert "加入班级" in html
    assert "邀请码" in html
