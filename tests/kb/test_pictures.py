"""The knowledge base's pictures (content/docs/img): safe to serve, readable on both themes, in both
languages, each with a text alternative on the page (FORMAT.md, "pictures as SVG")."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from portal.kb.content import page_files
from portal.kb.markdown import render_markdown

from .conftest import CONTENT

IMG = CONTENT / "docs" / "img"
SVG_NS = "{http://www.w3.org/2000/svg}"
PICTURE_RE = re.compile(r"!\[([^\]]*)\]\(img/([^)\s]+)\)")
SVGS = sorted(IMG.glob("*.svg"))


def pictures(path: Path) -> list[tuple[str, str]]:
    """(alt, file name) of every picture a page shows."""
    return PICTURE_RE.findall(path.read_text(encoding="utf-8"))


def test_the_pages_show_pictures() -> None:
    names = {name for path in page_files(CONTENT).values() for _alt, name in pictures(path)}
    assert {"vfio-model-en.svg", "iommu-translation-zh.svg", "mdev-lifecycle-en.svg", "qcow2-chain-zh.svg"} <= names


@pytest.mark.parametrize(("lang", "slug"), sorted(page_files(CONTENT)), ids="/".join)
def test_each_picture_exists_in_the_page_language_with_a_real_alt_text(lang: str, slug: str) -> None:
    path = page_files(CONTENT)[(lang, slug)]
    for alt, name in pictures(path):
        assert (IMG / name).is_file(), f"{path}: img/{name} does not exist"
        assert name.endswith(f"-{lang}.svg"), f"{path}: img/{name} is not the {lang} picture"
        assert len(alt) >= 40, f"{path}: img/{name}: the alt text must describe the picture, not name it"


@pytest.mark.parametrize("slug", sorted({slug for _lang, slug in page_files(CONTENT)}))
def test_both_languages_show_the_same_pictures(slug: str) -> None:
    files = page_files(CONTENT)
    shown = {lang: [name.rsplit("-", 1)[0] for _alt, name in pictures(files[(lang, slug)])] for lang in ("en", "zh")}
    assert shown["en"] == shown["zh"]


@pytest.mark.parametrize("svg", SVGS, ids=lambda p: p.name)
def test_svg_is_safe_accessible_and_themed(svg: Path) -> None:
    root = ET.fromstring(svg.read_text(encoding="utf-8"))  # noqa: S314 - our own content files
    assert root.tag == f"{SVG_NS}svg"
    assert (root.findtext(f"{SVG_NS}title") or "").strip(), f"{svg.name}: no <title>"
    assert len(root.findtext(f"{SVG_NS}desc") or "") >= 40, f"{svg.name}: no <desc> describing the picture"
    for element in root.iter():
        assert element.tag not in (f"{SVG_NS}script", f"{SVG_NS}foreignObject"), svg.name
        for attribute, value in element.attrib.items():
            assert not attribute.lower().startswith("on"), f"{svg.name}: event handler {attribute}"
            assert not re.match(r"\s*(javascript|data|https?):", value, re.I), f"{svg.name}: {attribute}={value}"
    style = "".join(s.text or "" for s in root.iter(f"{SVG_NS}style"))
    assert "prefers-color-scheme:dark" in style.replace(" ", ""), f"{svg.name}: no dark colours"


@pytest.mark.parametrize("svg", [p for p in SVGS if p.name.endswith("-en.svg")], ids=lambda p: p.name)
def test_every_picture_has_a_chinese_twin(svg: Path) -> None:
    assert svg.with_name(svg.name.replace("-en.svg", "-zh.svg")).is_file()


def test_a_picture_opens_full_size_and_scrolls_on_a_phone() -> None:
    """Shrunk to a 390 px column a diagram's words are unreadable: the picture links to its own file
    and sits in a box that scrolls sideways (kb.css gives it a readable width on narrow screens)."""
    html = render_markdown("Before ![The VFIO model](img/vfio-model-en.svg) after.", lang="en").html
    assert (
        '<a class="kb-figure" href="/docs/img/vfio-model-en.svg" rel="noopener noreferrer">'
        '<img alt="The VFIO model" src="/docs/img/vfio-model-en.svg"></a> after.'
    ) in html
    css = (Path(__file__).resolve().parents[2] / "portal/kb/static/kb/kb.css").read_text()
    assert re.search(r"a\.kb-figure \{[^}]*overflow-x: auto", css)
