"""Every main page works in Chromium under the Content-Security-Policy: no violation is reported.

The pages: home, a docs page, search (htmx live results), log-in, and a lab page with its
terminal attached to a running VM (xterm.js styles itself with <style> elements).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from tests import lab_stack
from tests.servers import ROOT, VENV_BIN

pytestmark = [pytest.mark.browser, pytest.mark.vm, pytest.mark.slow]

# Record every violation the page itself sees (before any of its scripts runs); Playwright's init
# scripts are not subject to the page's policy.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${where}`);
});
"""
DOC = "qemu-img"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab_stack.LabStack]:
    with lab_stack.lab_stack(tmp_path_factory.mktemp("csplab")) as running:
        # The real docs (code blocks, tables, figures), rendered into the stack's own database.
        subprocess.run([str(VENV_BIN / "python"), "manage.py", "docs", "build", "--content", str(ROOT / "content")],
                       cwd=ROOT, env=running.env, check=True, capture_output=True, timeout=300)  # fmt: skip
        yield running


class Watched:
    """A page whose CSP violations, from events and from the console, are collected."""

    def __init__(self, page: Page):
        self.page = page
        self.console: list[str] = []
        page.add_init_script(RECORD_VIOLATIONS)
        page.on("console", self._on_console)

    def _on_console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            self.console.append(message.text)

    def visit(self, url: str) -> None:
        response = self.page.goto(url)
        assert response is not None
        policy = response.headers.get("content-security-policy", "")
        for directive in ("script-src 'self'", "connect-src 'self'", "img-src 'self' data:", "frame-ancestors 'none'"):
            assert directive in policy, (url, policy)
        assert "unsafe-inline" not in policy
        assert "unsafe-eval" not in policy

    def violations(self) -> list[str]:
        seen: list[str] = self.page.evaluate("window.__cspViolations || []")
        return seen + self.console


def assert_clean(watched: Watched, where: str) -> None:
    assert watched.violations() == [], where


def test_main_pages_report_no_csp_violation(stack: lab_stack.LabStack, browser: Browser, artifacts: Path) -> None:
    watched = Watched(browser.new_page(viewport={"width": 1400, "height": 950}))
    page = watched.page

    watched.visit(stack.base + "/")
    page.locator("[data-theme-toggle]").click()  # theme.js and site.js, both as files
    assert_clean(watched, "home")

    watched.visit(f"{stack.base}/docs/en/{DOC}/")
    expect(page.locator("main h1")).to_be_visible()
    assert_clean(watched, "docs page")

    watched.visit(stack.base + "/docs/search/")
    page.locator(".kb-search-form input[type=search]").fill("qemu")
    expect(page.locator("#kb-results")).to_contain_text("qemu", ignore_case=True, timeout=10_000)  # htmx
    assert_clean(watched, "search")

    watched.visit(stack.base + "/accounts/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", lab_stack.STACK_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    assert_clean(watched, "login")

    watched.visit(f"{stack.base}/labs/{stack.slug}/")
    page.get_by_role("button", name="Start lab").click()
    expect(page.locator("[data-state-badge]")).to_have_text("Ready", timeout=120_000)
    rows = page.locator(".xterm-rows")
    expect(rows).to_contain_text("root@virtlab:", timeout=30_000)
    page.locator(".xterm").click()
    # 16-colour and true-colour output: classes, and the style attributes xterm.js sets.
    page.keyboard.type(r"printf '\033[31mred\033[0m \033[38;2;0;128;255mblue\033[0m\n'")
    page.keyboard.press("Enter")
    expect(rows).to_contain_text("red blue", timeout=20_000)
    expect(page.locator(".xterm-rows span", has_text="blue").last).to_have_css("color", "rgb(0, 128, 255)")
    # xterm.js's own <style> elements are in the page and were applied, not refused.
    assert page.locator(".xterm style").count() >= 1
    page.screenshot(path=str(artifacts / "lab-terminal-csp.png"), full_page=False)
    assert_clean(watched, "lab page with terminal")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("[data-state-badge]")).to_have_text("Stopped", timeout=30_000)
    page.close()


def test_the_policy_is_enforced_and_violations_are_seen(stack: lab_stack.LabStack, browser: Browser) -> None:
    """The detector is real: an injected inline script is refused, reported, and never runs."""
    watched = Watched(browser.new_page())
    watched.visit(stack.base + "/")
    ran = watched.page.evaluate(
        """() => {
          const s = document.createElement("script");
          s.textContent = "window.__injected = true";
          document.body.appendChild(s);
          const d = document.createElement("div");
          d.innerHTML = '<span style="color: red">x</span>';
          document.body.appendChild(d);
          return window.__injected === true;
        }"""
    )
    assert ran is False
    expect(watched.page.locator("body")).to_be_visible()
    watched.page.wait_for_timeout(200)
    found = watched.violations()
    assert any("script-src" in v for v in found), found
    assert any("style-src" in v for v in found), found
    watched.page.close()


def test_the_api_docs_work_under_the_policy(stack: lab_stack.LabStack, browser: Browser) -> None:
    """/api/docs (Swagger UI, served from our static files) renders and runs a request, with no violation."""
    watched = Watched(browser.new_page())
    page = watched.page
    watched.visit(stack.base + "/api/docs")
    operation = page.locator(".opblock", has_text="/api/labs").first
    expect(operation).to_be_visible(timeout=15_000)
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    answer = operation.locator(".live-responses-table tbody")
    expect(answer.locator(".response-col_status")).to_have_text("200", timeout=10_000)
    expect(answer).to_contain_text(stack.slug)  # the body Swagger fetched, under connect-src 'self'
    assert_clean(watched, "api docs")
    page.close()
