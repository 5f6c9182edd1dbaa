"""The docs in Debian's chromium: search-as-you-type, EN ⇄ ZH, copy buttons, screenshots."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect
from pytest_django.live_server_helper import LiveServer

from portal.kb import cache
from portal.kb.build import build_docs

from .conftest import CONTENT

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def site(live_server: LiveServer, transactional_db: None) -> str:
    # Transactional tests start from flushed tables: build the real content for the live server.
    build_docs(CONTENT)
    cache.forget()
    return str(live_server.url)


def test_search_as_you_type_and_language_switch(site: str, browser: Browser, artifacts: Path) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(site + "/docs/")
    expect(page.locator(".kb-card").first).to_be_visible()
    page.screenshot(path=str(artifacts / "kb-index.png"), full_page=True)
    page.goto(site + "/docs/search/")
    page.select_option("#kb-lang", "")
    page.locator("#kb-q").press_sequentially("qcow2 快", delay=40)
    first = page.locator("#kb-results .kb-hit").first
    expect(first).to_be_visible(timeout=10_000)
    expect(page).to_have_url(site + "/docs/search/?q=qcow2%20%E5%BF%AB&lang=&section=")  # htmx pushed the URL
    expect(page.locator("#kb-results mark").first).to_be_visible()
    page.locator("#kb-q").fill("中介设备")
    expect(page.locator(".kb-results-count")).to_contain_text("中介设备", timeout=10_000)
    expect(page.locator("#kb-results a[href^='/docs/zh/mdev/']").first).to_be_visible(timeout=10_000)
    page.screenshot(path=str(artifacts / "kb-search.png"), full_page=False)

    page.goto(site + "/docs/en/vfio/")
    expect(page.locator("h1")).to_have_text("VFIO: user-space drivers with an IOMMU")
    assert page.locator(".kb-copy").count() > 5  # copy buttons added by kb.js
    page.screenshot(path=str(artifacts / "kb-page-light.png"))
    page.click("[data-kb-lang-switch]")
    expect(page).to_have_url(site + "/docs/zh/vfio/")
    expect(page.locator("h1")).to_contain_text("借助 IOMMU 的用户态驱动")
    page.screenshot(path=str(artifacts / "kb-page-zh.png"))
    page.click("[data-kb-lang-switch]")
    expect(page).to_have_url(site + "/docs/en/vfio/")

    page.click("[data-theme-toggle]")  # auto → dark
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    page.locator("#model").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "kb-page-dark.png"))
    context.close()


def test_mobile_layout_and_copy_button(site: str, browser: Browser, artifacts: Path) -> None:
    context = browser.new_context(
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
        permissions=["clipboard-read", "clipboard-write"],
    )
    page = context.new_page()
    page.goto(site + "/docs/en/qemu-img/")
    expect(page.locator(".kb-toc")).not_to_have_attribute("open", "")  # TOC collapsed on phones
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"page scrolls sideways on a phone: {width}px"
    page.screenshot(path=str(artifacts / "kb-page-mobile.png"))
    console = page.locator(".codeblock[data-lang='console']").first
    console.scroll_into_view_if_needed()
    console.locator(".kb-copy").click()
    expect(console.locator(".kb-copy")).to_have_class("kb-copy done")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == console.get_attribute("data-copy")
    assert copied.startswith("qemu-img")  # the prompt is not copied
    shown = console.locator("pre").inner_text()
    assert len(shown.splitlines()) > len(copied.splitlines())  # output lines are not copied
    context.close()
