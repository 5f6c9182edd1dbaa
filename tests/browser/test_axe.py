"""Accessibility and layout in Debian's chromium: axe-core (npm, node_modules/axe-core) finds no
serious or critical violation on the home, docs, search, catalogue and lab pages in light and dark
mode (English light, Chinese dark), and a lab page's steps stay beside the terminal at desktop
widths and inside the screen on a phone, their long code lines scrolling inside their blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from playwright.sync_api import Browser, Page
from pytest_django.live_server_helper import LiveServer

from portal.kb import cache
from portal.kb.build import build_docs
from tests.kb.conftest import CONTENT

pytestmark = [pytest.mark.browser, pytest.mark.slow]

Scheme = Literal["light", "dark"]
AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
PAGES = [
    "/",
    "/docs/",
    "/docs/en/vfio/",
    "/docs/zh/qemu-img/",
    "/docs/search/?q=qcow2+snapshot",
    "/docs/search/?q=iommmu",  # nothing found: the suggestions
    "/docs/glossary/",
    "/labs/",
    "/labs/containers-from-scratch/",
]
# The lab whose steps hold the longest code lines and the widest table (content/labs).
WIDE_LAB = "/labs/containers-from-scratch/"
RUN_AXE = """async () => (await axe.run(document)).violations
  .filter(v => v.impact === "serious" || v.impact === "critical")
  .map(v => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map(n => n.target.join(" ")).join(" | ")}`)"""
GEOMETRY = """() => ({
  scrollWidth: document.documentElement.scrollWidth,
  steps: [...document.querySelectorAll(".lab-step")].map(s => {
    const r = s.getBoundingClientRect();
    return {left: r.left, right: r.right, overflows: s.scrollWidth > s.clientWidth + 1};
  }),
  terminalLeft: document.querySelector(".lab-terminal-panel").getBoundingClientRect().left,
  scrollingBlocks: [...document.querySelectorAll(".lab-step pre")].filter(p => p.scrollWidth > p.clientWidth).length,
})"""

SHOW_WIDEST = """() => [...document.querySelectorAll(".lab-step pre")]
  .find(p => p.scrollWidth > p.clientWidth).scrollIntoView({block: "center"})"""


@pytest.fixture
def site(live_server: LiveServer, transactional_db: None) -> str:
    build_docs(CONTENT)
    cache.forget()
    return str(live_server.url)


def _axe(page: Page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    violations: list[str] = page.evaluate(RUN_AXE)
    return violations


def test_main_pages_pass_axe_and_lab_steps_fit_beside_the_terminal(
    site: str, browser: Browser, artifacts: Path
) -> None:
    assert AXE.is_file(), "npm ci (scripts/assets.sh) installs axe-core"
    found: list[str] = []
    modes: list[tuple[Scheme, str]] = [("light", "en"), ("dark", "zh-hans")]
    for scheme, language in modes:
        # axe is injected as a script: the test lifts the page's CSP, which test_csp.py checks.
        context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme=scheme, bypass_csp=True)
        context.add_cookies([{"name": "django_language", "value": language, "url": site}])
        page = context.new_page()
        for path in PAGES:
            assert page.goto(site + path).status == 200, path  # type: ignore[union-attr]
            found += [f"{scheme} {path}: {v}" for v in _axe(page)]
        context.close()
    assert not found, "\n".join(found)

    layouts: list[tuple[int, Scheme]] = [(1280, "light"), (1440, "dark"), (390, "dark")]
    for width, scheme in layouts:
        context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
        page = context.new_page()
        page.goto(site + WIDE_LAB)
        geometry = page.evaluate(GEOMETRY)
        assert geometry["scrollWidth"] <= width, f"{width}px: the page scrolls sideways"
        assert geometry["scrollingBlocks"] > 0, "no long code line on the page: the check would prove nothing"
        for step in geometry["steps"]:
            assert not step["overflows"], f"{width}px: a step's content overflows it"
            assert step["right"] <= width
            if width > 900:  # two columns: the terminal on the right, never over a step
                assert step["right"] <= geometry["terminalLeft"], f"{width}px: a step runs under the terminal"
        page.evaluate(SHOW_WIDEST)
        page.screenshot(path=str(artifacts / f"lab-layout-{width}-{scheme}.png"))
        context.close()
