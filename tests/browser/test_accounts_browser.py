"""Sign up, log out and log in again in a real browser."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, expect
from pytest_django.live_server_helper import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_signup_logout_login_in_chromium(live_server: LiveServer, browser: Browser, artifacts: Path) -> None:
    page = browser.new_page()
    page.goto(live_server.url + "/")
    page.get_by_role("link", name="Sign up").click()
    page.fill("#id_username", "dora")
    page.fill("#id_email", "dora@example.com")
    page.fill("#id_password1", "a-very-good-passphrase-9")
    page.fill("#id_password2", "a-very-good-passphrase-9")
    page.screenshot(path=str(artifacts / "signup.png"), full_page=True)
    page.get_by_role("button", name="Sign up").click()
    expect(page.locator(".message-success")).to_contain_text("Welcome to VirtLab, dora")
    assert User.objects.filter(username="dora").exists()

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("link", name="Log in")).to_be_visible()

    page.get_by_role("link", name="Log in").click()
    page.fill("#id_username", "dora")
    page.fill("#id_password", "a-very-good-passphrase-9")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".user-link")).to_have_text("dora")
    page.screenshot(path=str(artifacts / "home-logged-in.png"), full_page=True)
    page.close()


def test_mobile_menu_and_dark_mode(live_server: LiveServer, browser: Browser, artifacts: Path) -> None:
    ctx = browser.new_context(viewport={"width": 390, "height": 800}, color_scheme="dark")
    page = ctx.new_page()
    page.goto(live_server.url + "/")
    links = page.locator(".nav-links")
    expect(links).to_be_hidden()
    page.locator("[data-nav-toggle]").click()
    expect(links).to_be_visible()
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(17, 21, 28)"  # the dark palette's --bg
    page.screenshot(path=str(artifacts / "home-mobile-dark.png"), full_page=True)
    ctx.close()
