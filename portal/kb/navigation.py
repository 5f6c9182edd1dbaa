"""What surrounds a page: sections, prev/next, related pages, the language switch."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _

from labs.services.catalog import get_lab

from .cache import Corpus, PageInfo
from .content import LANGS, SECTIONS
from .markdown import doc_url, lab_url
from .models import DocPage

SECTION_LABELS = {
    "fundamentals": _("Fundamentals"),
    "kernel": _("Kernel interfaces"),
    "storage": _("Storage"),
    "qemu": _("QEMU"),
    "containers": _("Containers"),
}
LANG_LABELS = {"en": "English", "zh": "中文"}


def _labs(slugs: list[str], lang: str) -> list[dict[str, str]]:
    """The page's labs that are offered (valid in the catalog), with their titles in `lang`."""
    offered = [lab for lab in map(get_lab, slugs) if lab is not None]
    return [{"slug": lab.slug, "url": lab_url(lab.slug), "name": lab.title.get(lang)} for lab in offered]


def section_choices() -> list[tuple[str, Any]]:
    return [(s, SECTION_LABELS.get(s, s)) for s in SECTIONS]


def _ordered(corpus: Corpus, lang: str) -> list[PageInfo]:
    pages = [p for (lg, _slug), p in corpus.pages.items() if lg == lang]
    return sorted(pages, key=lambda p: (SECTIONS.index(p.section), p.order, p.slug))


def sections_for_index(corpus: Corpus, ui: str) -> list[dict[str, Any]]:
    """Every page grouped by section, in the UI language where it exists, the other otherwise."""
    slugs = sorted({slug for _lang, slug in corpus.pages})
    rows: list[dict[str, Any]] = []
    for slug in slugs:
        available = [lg for lg in LANGS if (lg, slug) in corpus.pages]
        main = corpus.pages[(ui if ui in available else available[0], slug)]
        rows.append(
            {
                "page": main,
                "url": doc_url(main.lang, slug),
                "langs": [
                    {"code": lg, "label": LANG_LABELS[lg], "url": doc_url(lg, slug)}
                    for lg in LANGS
                    if (lg, slug) in corpus.pages
                ],
            }
        )
    out = []
    for section in SECTIONS:
        items = sorted(
            (r for r in rows if r["page"].section == section), key=lambda r: (r["page"].order, r["page"].slug)
        )
        if items:
            out.append({"key": section, "label": SECTION_LABELS.get(section, section), "items": items})
    return out


def page_context(corpus: Corpus, lang: str, slug: str, requested: str) -> dict[str, Any]:
    """Everything the page body needs; rendered once per build and UI language, then cached."""
    page = DocPage.objects.get(lang=lang, slug=slug)
    ordered = _ordered(corpus, lang)
    index = next(i for i, p in enumerate(ordered) if p.slug == slug)
    other = "zh" if lang == "en" else "en"
    related = []
    for rel in page.related:
        info = corpus.pages.get((lang, rel)) or corpus.pages.get((other, rel))
        if info is not None:
            related.append({"title": info.title, "url": doc_url(info.lang, rel), "summary": info.summary})
    return {
        "page": page,
        "doc_lang": lang,
        "requested_lang": requested,
        "fallback": lang != requested,
        "section_label": SECTION_LABELS.get(page.section, page.section),
        "toc": page.toc_json,
        "prev": _link(ordered[index - 1]) if index > 0 else None,
        "next": _link(ordered[index + 1]) if index + 1 < len(ordered) else None,
        "related": related,
        "labs": _labs(page.labs, lang),
        "switch": {
            "code": other,
            "label": LANG_LABELS[other],
            "url": doc_url(other, slug),
            "available": (other, slug) in corpus.pages,
        },
        "en_url": doc_url("en", slug),
    }


def _link(info: PageInfo) -> dict[str, str]:
    return {"title": info.title, "url": doc_url(info.lang, info.slug)}
