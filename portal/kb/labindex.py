"""Labs in the search index: each lab a page, each step a section (anchor step-N), both languages.
Re-indexed when a lab's text changes, dropped when it is no longer offered."""

from __future__ import annotations

import hashlib

from labs.catalog import Lab

from .content import LANGS
from .markdown import render_markdown
from .models import SearchPage
from .search import IndexDoc, IndexSection
from .search.backend import SearchBackend


def _text_hash(lab: Lab, lang: str) -> str:
    parts = [lab.title.get(lang), lab.summary.get(lang)]
    for step in lab.steps:
        parts += [step.title.get(lang), step.instructions.get(lang)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _plain(markdown: str, lang: str) -> str:
    """The step's instructions as text, rendered exactly as the lab page shows them."""
    rendered = render_markdown(markdown, lang=lang)
    return " ".join(f"{s.heading} {s.text}" if s.id else s.text for s in rendered.sections).strip()


def lab_doc(lab: Lab, lang: str, content_hash: str) -> IndexDoc:
    steps = [
        IndexSection(step.anchor, step.title.get(lang), _plain(step.instructions.get(lang), lang)) for step in lab.steps
    ]
    return IndexDoc(
        kind=SearchPage.Kind.LAB,
        lang=lang,
        slug=lab.slug,
        section="",
        title=lab.title.get(lang),
        summary=lab.summary.get(lang),
        sections=[IndexSection("", "", ""), *steps],
        content_hash=content_hash,
    )


def index_labs(labs: dict[str, Lab], backend: SearchBackend) -> list[str]:
    """Bring the index's labs in line with the offered ones; returns the lab pages (re)indexed."""
    rows = SearchPage.objects.filter(kind=SearchPage.Kind.LAB).values_list("lang", "slug", "content_hash")
    stored = {(lang, slug): h for lang, slug, h in rows}
    changed = []
    for lab in labs.values():
        for lang in LANGS:
            content_hash = _text_hash(lab, lang)
            if stored.get((lang, lab.slug)) != content_hash:
                changed.append(lab_doc(lab, lang, content_hash))
    backend.index(changed)
    backend.remove((SearchPage.Kind.LAB, lang, slug) for lang, slug in stored if slug not in labs)
    return [f"lab:{d.lang}/{d.slug}" for d in changed]
