"""Start a lab in Debian's chromium and type into the real terminal of the real VM."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests import lab_stack

pytestmark = [pytest.mark.browser, pytest.mark.vm, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab_stack.LabStack]:
    with lab_stack.lab_stack(tmp_path_factory.mktemp("browserlab")) as running:
        yield running


def test_start_lab_and_type_into_the_terminal(stack: lab_stack.LabStack, browser: Browser, artifacts: Path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 950})
    page.goto(stack.base + "/accounts/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", lab_stack.STACK_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(f"{stack.base}/labs/{stack.slug}/")
    page.get_by_role("button", name="Start lab").click()

    badge = page.locator("[data-state-badge]")
    expect(badge).to_have_text("Ready", timeout=120_000)
    rows = page.locator(".xterm-rows")
    expect(rows).to_contain_text("root@virtlab:", timeout=30_000)
    expect(page.locator("[data-countdown]")).to_contain_text("Time left")

    page.locator(".xterm").click()
    page.keyboard.type("echo browser-$((6*7))")
    page.keyboard.press("Enter")
    expect(rows).to_contain_text("browser-42", timeout=20_000)
    # Text arriving as one input event, as an IME commits a composition or a paste lands.
    page.keyboard.type("echo ")
    page.keyboard.insert_text("你好世界")
    page.keyboard.press("Enter")
    expect(rows).to_contain_text("你好世界", timeout=20_000)

    # A failed check shows its verdict live next to the step.
    page.locator('[data-action="check"][data-step="1"]').click()
    expect(page.locator('[data-verdict="1"]')).to_contain_text("Not yet", timeout=60_000)
    page.locator(".xterm").click()
    page.keyboard.type("echo hi > /root/hello.txt")
    page.keyboard.press("Enter")
    page.locator('[data-action="check"][data-step="1"]').click()
    expect(page.locator('[data-verdict="1"]')).to_contain_text("Passed", timeout=60_000)
    expect(page.locator("#step-2")).to_have_class("lab-step is-current")
    page.screenshot(path=str(artifacts / "lab-terminal.png"), full_page=False)

    # Reloading shows the same state, from the DB, and the terminal's scrollback comes back.
    page.reload()
    expect(badge).to_have_text("Ready")
    expect(rows).to_contain_text("browser-42", timeout=20_000)

    # Any step reached can be taken back to its checkpoint: the earlier one, or the current afresh.
    back = page.locator('[data-action="goto"][data-step="1"]')
    expect(back).to_have_text("Back to this step")
    expect(page.locator('[data-action="goto"][data-step="2"]')).to_have_text("Restart this step")
    page.once("dialog", lambda dialog: dialog.accept())
    back.click()
    expect(page.locator("#step-1")).to_have_class("lab-step is-current", timeout=60_000)
    expect(badge).to_have_text("Ready", timeout=60_000)
    expect(page.locator('[data-verdict="1"]')).to_have_text("")
    page.locator(".xterm").click()  # the terminal reattached to the restored VM
    page.keyboard.type("echo after-$((2+3))")
    page.keyboard.press("Enter")
    expect(rows).to_contain_text("after-5", timeout=30_000)
    page.locator('[data-action="check"][data-step="1"]').click()  # the file is gone with the revert
    expect(page.locator('[data-verdict="1"]')).to_contain_text("Not yet", timeout=60_000)
    page.screenshot(path=str(artifacts / "lab-back-to-step.png"), full_page=False)

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Stop").click()
    expect(badge).to_have_text("Stopped", timeout=30_000)
    expect(rows).to_contain_text("The VM is gone", timeout=20_000)
    page.screenshot(path=str(artifacts / "lab-stopped.png"), full_page=False)
    page.close()
