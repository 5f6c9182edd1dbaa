"""Docs pages: index, page in both languages, fallback, redirect, 404, glossary, print CSS."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders
from django.test import Client
from pytest_django import Settings

from .conftest import rebuild

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("docs")]
VFIO_ZH = "VFIO\uff1a借助 IOMMU 的用户态驱动"


def static_text(name: str) -> str:
    """The text of a collected static file (fails the test if there is none)."""
    path = finders.find(name)
    assert isinstance(path, str), f"no static file {name}"
    return Path(path).read_text()


def test_index_lists_every_section_in_both_languages(client: Client) -> None:
    html = client.get("/docs/").content.decode()
    for slug in ("vfio", "mdev", "qemu-img", "ublk", "container-stack", "what-is-virtualization"):
        assert f'href="/docs/en/{slug}/"' in html
        assert f'href="/docs/zh/{slug}/"' in html
    assert 'id="section-kernel"' in html
    assert 'name="q"' in html


def test_index_in_chinese_ui_shows_chinese_titles(client: Client) -> None:
    client.cookies["django_language"] = "zh-hans"
    html = client.get("/docs/").content.decode()
    assert VFIO_ZH in html


def test_english_page_has_toc_breadcrumbs_prev_next_labs_related_and_switch(client: Client) -> None:
    resp = client.get("/docs/en/vfio/")
    html = resp.content.decode()
    assert resp.status_code == 200
    assert "<h1>VFIO: user-space drivers with an IOMMU</h1>" in html
    assert '<a href="#model">' in html
    assert 'id="model"' in html
    assert 'class="kb-breadcrumbs"' in html
    assert 'href="/docs/#section-kernel"' in html
    assert 'rel="prev"' in html
    assert 'rel="next"' in html
    # Related labs box: the lab's own title from the catalog, in the page's language.
    assert '<a href="/labs/vfio-userspace/">VFIO from user space: drive a PCI device' in html
    assert 'href="/docs/en/mdev/"' in html  # related docs
    assert 'href="/docs/zh/vfio/" hreflang="zh"' in html  # EN ⇄ ZH switch
    assert 'data-copy="' in html
    assert 'data-runnable="true"' in html
    assert "kb-notice" not in html


def test_chinese_page_links_back_to_english(client: Client) -> None:
    html = client.get("/docs/zh/vfio/").content.decode()
    assert VFIO_ZH in html
    assert 'href="/docs/en/vfio/" hreflang="en"' in html
    assert 'href="/docs/zh/mdev/"' in html  # doc: links and related pages stay in Chinese
    assert '<a href="/labs/vfio-userspace/">在用户态使用 VFIO' in html
    assert 'lang="zh"' in html


def test_missing_translation_falls_back_with_a_notice(content_copy: Path, client: Client) -> None:
    (content_copy / "docs" / "zh" / "mdev.md").unlink()
    rebuild(content_copy)
    html = client.get("/docs/zh/mdev/").content.decode()
    assert "kb-notice-fallback" in html
    assert "not been translated into Chinese" in html
    assert "<h1>Mediated devices" in html or "<h1>" in html
    assert 'lang="en"' in html


def test_slug_without_language_redirects_to_the_request_language(client: Client) -> None:
    assert client.get("/docs/vfio/")["Location"] == "/docs/en/vfio/"
    client.cookies["django_language"] = "zh-hans"
    assert client.get("/docs/vfio/")["Location"] == "/docs/zh/vfio/"


@pytest.mark.parametrize("url", ["/docs/en/no-such-page/", "/docs/no-such-page/", "/docs/fr/vfio/"])
def test_unknown_pages_are_404(client: Client, url: str) -> None:
    assert client.get(url).status_code == 404


def test_print_and_dark_styles_are_linked(client: Client) -> None:
    html = client.get("/docs/en/qemu-img/").content.decode()
    assert "kb/kb.css" in html
    assert "kb/pygments.css" in html
    css = static_text("kb/kb.css")
    assert "@media print" in css
    assert ".kb-sidebar" in css.split("@media print")[1]
    assert "@media (max-width: 900px)" in css
    assert '[data-theme="dark"] .highlight' in static_text("kb/pygments.css")


def test_search_page_and_fragment(client: Client) -> None:
    page = client.get("/docs/search/", {"q": "qcow2 快照", "lang": "zh"}).content.decode()
    assert 'id="kb-results"' in page
    assert 'href="/docs/zh/qemu-img/' in page
    assert "<mark>" in page
    fragment = client.get("/docs/search/", {"q": "vfio"}, headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in fragment
    assert 'class="kb-hit"' in fragment


def test_search_rejects_unknown_language_and_section(client: Client) -> None:
    assert client.get("/docs/search/", {"q": "x", "lang": "fr"}).status_code == 400
    resp = client.get("/docs/search/", {"q": "x", "section": "astrology"})
    assert resp.status_code == 400
    assert b"fundamentals" in resp.content


def test_glossary_lists_term_pairs(client: Client) -> None:
    html = client.get("/docs/glossary/").content.decode()
    assert "passthrough" in html
    assert "直通" in html
    assert 'href="/docs/en/vfio/"' in html


def test_cached_page_gets_a_fresh_working_csrf_token_per_reader(client: Client) -> None:
    import re

    from django.test import Client as FreshClient

    tokens = []
    for reader in (FreshClient(enforce_csrf_checks=True), FreshClient(enforce_csrf_checks=True)):
        html = reader.get("/docs/en/mdev/").content.decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
        assert token is not None
        tokens.append(token.group(1))
        # the language form in the header still posts with the token punched into the cached page
        resp = reader.post(
            "/i18n/setlang/", {"language": "zh-hans", "next": "/docs/en/mdev/", "csrfmiddlewaretoken": token.group(1)}
        )
        assert resp.status_code == 302
    assert tokens[0] != tokens[1]
    assert "\x00" not in html


def test_signed_in_reader_sees_their_own_header(client: Client, alice: User) -> None:
    client.get("/docs/en/mdev/")  # an anonymous copy is cached first
    client.force_login(alice)
    html = client.get("/docs/en/mdev/").content.decode()
    assert ">alice</a>" in html


def test_doc_images_are_served_from_content_with_a_strict_csp(
    content_copy: Path, client: Client, settings: Settings
) -> None:
    settings.CONTENT_DIR = content_copy
    (content_copy / "docs" / "img").mkdir(parents=True, exist_ok=True)
    (content_copy / "docs" / "img" / "chain.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    resp = client.get("/docs/img/chain.svg")
    assert resp.status_code == 200
    assert resp["Content-Security-Policy"].startswith("default-src 'none'")
    assert client.get("/docs/img/missing.svg").status_code == 404
    assert client.get("/docs/img/..%2Fen%2Fvfio.md").status_code == 404


def test_head_answers_like_get_and_pages_name_a_favicon(client: Client) -> None:
    for path in ("/", "/docs/", "/docs/en/vfio/", "/docs/search/?q=vfio"):
        get, head = client.get(path), client.head(path)
        assert get.status_code == head.status_code == 200, path
        assert head["Content-Type"] == get["Content-Type"]
        assert head.content == b""
    html = client.get("/").content.decode()
    icon = re.search(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', html)
    assert icon is not None
    assert static_text("favicon.svg").startswith("<svg")
