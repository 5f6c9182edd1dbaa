"""Knowledge-base search: one entry point, the backend chosen by the database vendor."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from django.db import connection

from ..cache import PageInfo, corpus
from ..markdown import doc_url
from ..text import parse_query
from .backend import IndexDoc, RawHit, SearchBackend
from .postgres_fts import PostgresFtsBackend
from .snippets import highlighter, mark, prefix_count, snippet, stem, term_keys
from .sqlite_fts import SqliteFtsBackend

__all__ = ["IndexDoc", "RawHit", "SearchResult", "get_backend", "search"]
MAX_LIMIT = 50


def get_backend() -> SearchBackend:
    if connection.vendor == "postgresql":
        return PostgresFtsBackend()
    return SqliteFtsBackend()


@dataclass(frozen=True)
class SearchResult:
    lang: str
    slug: str
    section: str
    title_html: str
    heading_html: str
    anchor: str
    url: str
    snippet_html: str
    score: float


def _section_score(section: dict[str, Any], weighted: list[tuple[str, int]], prefix: str) -> int:
    """Each matched term scores its weight (typed words 3, glossary expansions 1) times ten plus
    a little for repeats; a heading match counts triple."""
    heading, text = section.get("heading_terms", {}), section.get("terms", {})
    score = 0
    for key, weight in weighted:
        n = text.get(key, 0)
        if n:
            score += weight * (10 + min(n, 5))
        if key in heading:
            score += weight * 30
    if prefix:
        score += 30 * bool(prefix_count(heading, section["ordered_heading_terms"], prefix))
        score += 10 * bool(prefix_count(text, section["ordered_terms"], prefix))
    return score


def _best_section(info: PageInfo, weighted: list[tuple[str, int]], prefix: str) -> dict[str, Any]:
    """The first section with the highest `_section_score`. Only sections holding a query term (or
    a completion of the prefix) can score above 0, so only those are scored."""
    sections = info.sections
    if not sections:
        return {"id": "", "heading": info.title, "text": info.summary}
    candidates: set[int] = set()
    for key, _weight in weighted:
        candidates.update(info.term_sections.get(key, ()))
    if prefix:
        vocabulary = info.vocabulary
        i = bisect.bisect_left(vocabulary, prefix)
        while i < len(vocabulary) and vocabulary[i].startswith(prefix):
            candidates.update(info.term_sections[vocabulary[i]])
            i += 1
    best, best_score = sections[0], 0
    for i in sorted(candidates):
        score = _section_score(sections[i], weighted, prefix)
        if score > best_score:
            best, best_score = sections[i], score
    return best


def search(q: str, *, lang: str | None = None, section: str | None = None, limit: int = 10) -> list[SearchResult]:
    """Ranked pages for `q`, each with its best-matching section and a highlighted snippet."""
    snap = corpus()
    query = parse_query(q, snap.glossary)
    if not query:
        return []
    hits = get_backend().query(query.terms, lang or None, section or None, min(limit, MAX_LIMIT))
    pattern = highlighter(query.highlight_words)
    keys = term_keys(query.highlight_words)
    typed = term_keys(query.typed_words)
    weighted = [(k, 3 if k in typed else 1) for k in keys]
    prefix = next((stem(t.words[0]) for t in query.terms if t.prefix), "")
    results = []
    for hit in hits:
        info = snap.pages.get((hit.lang, hit.slug))
        if info is None:  # index ahead of the page table for a moment during a build
            continue
        best = _best_section(info, weighted, prefix)
        anchor = best["id"]
        heading = best["heading"] if anchor else ""
        results.append(
            SearchResult(
                lang=hit.lang,
                slug=hit.slug,
                section=info.section,
                title_html=mark(info.title, pattern),
                heading_html=mark(heading, pattern),
                anchor=anchor,
                url=doc_url(hit.lang, hit.slug, anchor),
                snippet_html=snippet(best["text"] or info.summary, keys, typed),
                score=hit.score,
            )
        )
    return results
