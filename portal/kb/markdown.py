"""THE Markdown renderer for VirtLab (docs pages and lab step text).

`render_markdown(text, lang=...)` returns sanitized HTML plus what callers need around it: the
table of contents with stable ids, every heading, every code block (language, runnable flag,
copyable text), the plain text of each section (for search) and the doc and lab links found.
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import lxml.html
import markdown
from django.urls import reverse
from markdown.extensions import Extension
from markdown.extensions.toc import slugify_unicode
from markdown.treeprocessors import Treeprocessor

from .content import IMAGE_NAME
from .fences import CodeBlock, FenceCollector
from .sanitize import sanitize_html

LANGS = ("en", "zh")
LINK_RE = re.compile(r"^(doc|lab):([a-z0-9][a-z0-9-]*)(?:#([\w-]+))?$")
IMG_RE = re.compile(rf"^img/({IMAGE_NAME})$")  # anything else under img/ stays a (dead) relative link
SECTION_HEADINGS = {"h2", "h3"}
PRE_RE = re.compile(r"(<pre[\s>].*?</pre>)", re.S)
# A line break between two CJK characters (or CJK punctuation) is not a space in Chinese.
_CJK = r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]"
CJK_BREAK_RE = re.compile(rf"(?<={_CJK})\n(?={_CJK})")


@dataclass(frozen=True)
class Heading:
    level: int
    id: str
    title: str


@dataclass(frozen=True)
class Section:
    """The text under one h2/h3 (the first has id "" and holds the text before any heading)."""

    id: str
    heading: str
    text: str


@dataclass
class Rendered:
    html: str
    toc: list[Heading]
    headings: list[Heading]
    code_blocks: list[CodeBlock]
    sections: list[Section] = field(default_factory=list)
    doc_links: list[tuple[str, str]] = field(default_factory=list)
    lab_links: list[tuple[str, str]] = field(default_factory=list)


@functools.lru_cache(maxsize=1024)
def _page_path(lang: str, slug: str) -> str:
    return reverse("kb:page", kwargs={"lang": lang, "slug": slug})


def doc_url(lang: str, slug: str, anchor: str = "") -> str:
    url = _page_path(lang, slug)
    return f"{url}#{anchor}" if anchor else url


def lab_url(slug: str, anchor: str = "") -> str:
    # The lab engine owns /labs/<slug>/; step anchors are `step-N`.
    return f"/labs/{slug}/" + (f"#{anchor}" if anchor else "")


class _LinkRewriter(Treeprocessor):
    """doc:slug#anchor → the page in the same language; lab:slug#step-N → the lab page."""

    def __init__(self, md: markdown.Markdown, lang: str, found: dict[str, list[tuple[str, str]]]) -> None:
        super().__init__(md)
        self.lang = lang
        self.found = found

    def run(self, root: ET.Element) -> None:
        for a in root.iter("a"):
            m = LINK_RE.match(a.get("href", ""))
            if not m:
                continue
            kind, slug, anchor = m.group(1), m.group(2), m.group(3) or ""
            self.found[kind].append((slug, anchor))
            a.set("href", doc_url(self.lang, slug, anchor) if kind == "doc" else lab_url(slug, anchor))
        # A picture links to its own file, and sits in a box that scrolls sideways: on a phone a
        # diagram shrunk to the column is unreadable, so it keeps a readable width (kb.css) and a
        # tap opens it full size.
        for parent in list(root.iter()):
            for index, img in enumerate(list(parent)):
                m = IMG_RE.match(img.get("src", "")) if img.tag == "img" else None
                if m is None:
                    continue
                src = reverse("kb:image", kwargs={"name": m.group(1)})
                img.set("src", src)
                link = ET.Element("a", {"class": "kb-figure", "href": src})
                link.tail, img.tail = img.tail, None
                parent.remove(img)
                link.append(img)
                parent.insert(index, link)


class _VirtLabExtension(Extension):
    def __init__(self, lang: str, found: dict[str, list[tuple[str, str]]]) -> None:
        super().__init__()
        self.lang = lang
        self.found = found

    def extendMarkdown(self, md: markdown.Markdown) -> None:
        md.treeprocessors.register(_LinkRewriter(md, self.lang, self.found), "virtlab_links", 5)


def _flatten(tokens: list[dict[str, Any]]) -> list[Heading]:
    out: list[Heading] = []
    for t in tokens:
        out.append(Heading(int(t["level"]), str(t["id"]), _strip_tags(str(t["name"]))))
        out.extend(_flatten(t.get("children", [])))
    return out


def _strip_tags(text: str) -> str:
    return re.sub(r"<[^>]+>", "", text) if "<" in text else text


# Elements whose edges separate words: table cells, list items, line breaks. lxml's text_content()
# would glue "<td>a</td><td>b</td>" or "x<br>y" into one word, unfindable by either part.
WORD_BREAKS = frozenset({"br", "td", "th", "li", "p", "div", "dt", "dd", "tr", "pre", "blockquote", "figcaption"})


def _text_of(el: lxml.html.HtmlElement) -> str:
    for sub in el.iter(*WORD_BREAKS):
        sub.tail = " " + (sub.tail or "")
    return str(el.text_content())


def _sections(html: str, intro: str) -> list[Section]:
    sections = [Section("", intro, "")]
    parts: list[list[str]] = [[]]
    if html.strip():
        for el in lxml.html.fragments_fromstring(html):
            if isinstance(el, str):
                parts[-1].append(el)
                continue
            if el.tag in SECTION_HEADINGS and el.get("id"):
                sections.append(Section(el.get("id", ""), el.text_content().strip(), ""))
                parts.append([])
            else:
                parts[-1].append(_text_of(el))
    return [Section(s.id, s.heading, " ".join(" ".join(p).split())) for s, p in zip(sections, parts, strict=True)]


def _join_cjk_lines(html: str) -> str:
    parts = PRE_RE.split(html)
    return "".join(p if i % 2 else CJK_BREAK_RE.sub("", p) for i, p in enumerate(parts))


def render_markdown(text: str, *, lang: str, title: str = "") -> Rendered:
    """Render trusted Markdown from content/ to sanitized HTML (see content/docs/FORMAT.md)."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}")
    fences = FenceCollector()
    found: dict[str, list[tuple[str, str]]] = {"doc": [], "lab": []}
    md = markdown.Markdown(
        extensions=[
            "tables",
            "attr_list",
            "admonition",
            "toc",
            "pymdownx.superfences",
            "sane_lists",
            _VirtLabExtension(lang, found),
        ],
        extension_configs={
            "toc": {"toc_depth": "2-3", "slugify": slugify_unicode, "permalink": False},
            "pymdownx.superfences": {
                "custom_fences": [
                    {"name": "*", "class": "highlight", "format": fences.format, "validator": fences.validate}
                ],
            },
        },
        output_format="html",
    )
    html = sanitize_html(_join_cjk_lines(md.convert(text)))
    # Wide tables scroll sideways inside the page: keyboard users must be able to reach them.
    html = html.replace("<table>", '<table tabindex="0">')
    headings = [
        Heading(int(m.group(1)), m.group(2), _strip_tags(m.group(3)).strip())
        for m in re.finditer(r'<h([2-6]) id="([^"]+)">(.*?)</h\1>', html, re.S)
    ]
    return Rendered(
        html=html,
        toc=_flatten(getattr(md, "toc_tokens", [])),
        headings=headings,
        code_blocks=fences.blocks,
        sections=_sections(html, title),
        doc_links=found["doc"],
        lab_links=found["lab"],
    )
