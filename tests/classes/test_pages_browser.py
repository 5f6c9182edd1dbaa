"""The class pages in Debian's chromium: axe-core finds no serious or critical violation on the
class list, an instructor's class page, an invite link and a learner's seat (English light at
1280 px, Chinese dark at 390 px), and at 390 px nothing but the seat table scrolls sideways.
Screenshots go to test-artifacts/."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Page

from classes.joining import join, start_seat_session
from classes.models import LabClass
from labs.models import LabSession, StepResult
from labs.states import SessionState
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
RUN_AXE = """async () => (await axe.run(document)).violations
  .filter(v => v.impact === "serious" || v.impact === "critical")
  .map(v => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map(n => n.target.join(" ")).join(" | ")}`)"""


def log_in(page: Page, base: str, username: str) -> None:
    page.goto(base + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("main button[type=submit]")


def check(page: Page, what: str, found: list[str], artifacts: Path) -> None:
    page.screenshot(path=str(artifacts / f"class-{what}.png"), full_page=True)
    page.add_script_tag(path=str(AXE))
    found += [f"{what}: {v}" for v in page.evaluate(RUN_AXE)]
    if "390" in what:
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, f"{what}: the page scrolls sideways"


def test_class_pages_pass_axe_in_both_themes_and_fit_a_phone(
    live_server: Any, browser: Browser, artifacts: Path, klass_open: LabClass, alice: User, bob: User, carol: User
) -> None:
    code = klass_open.invites.get().code
    for learner in (alice, bob):  # two seats under way, one failing step 1; carol waits in line
        session = start_seat_session(join(learner, code))
        LabSession.objects.filter(pk=session.pk).update(state=SessionState.READY, ready_at=session.created_at)
        reason = {"ok": False, "en": "/root/hello.txt exists: not yet", "zh": "/root/hello.txt 还没有", "detail": ""}
        StepResult.objects.create(session=session, step=1, passed=False, message="not yet", details=[reason])
    join(carol, code)
    base, found = live_server.url, list[str]()
    looks: tuple[tuple[Literal["light", "dark"], int, str], ...] = (("light", 1280, "en"), ("dark", 390, "zh-hans"))
    for scheme, width, lang in looks:
        for who, path in (("teacher", f"/classes/{klass_open.pk}/"), ("teacher", "/classes/"),
                          (None, f"/classes/join/{code}"), ("carol", f"/classes/{klass_open.pk}/")):  # fmt: skip
            # axe is injected as a script: the context lifts the page's CSP (tests/browser/test_csp.py checks it).
            context = browser.new_context(
                viewport={"width": width, "height": 900}, color_scheme=scheme, bypass_csp=True
            )
            context.add_cookies([{"name": "django_language", "value": lang, "url": base}])
            page = context.new_page()
            if who:
                log_in(page, base, who)
            page.goto(base + path)
            name = path.strip("/").replace("/", "-") or "index"
            check(page, f"{who or 'anonymous'}-{name}-{scheme}-{width}", found, artifacts)
            context.close()
    assert not found, "\n".join(found)
