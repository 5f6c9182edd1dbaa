"""Knowledge-base search: one entry point, the backend chosen by the database vendor."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection

from ..cache import corpus
from ..content import GOLDEN_NOTHING
from ..markdown import doc_url, lab_url
from ..models import SearchPage
from ..text import CJK_RE, parse_query
from .backend import Filters, IndexDoc, IndexSection, RawHit, SearchBackend
from .postgres_fts import PostgresFtsBackend
from .snippets import highlighter, mark, snippet, term_keys
from .sqlite_fts import SqliteFtsBackend
from .suggest import suggestions

__all__ = [
    "IndexDoc",
    "IndexSection",
    "RawHit",
    "SearchResult",
    "get_backend",
    "golden_passes",
    "query_language",
    "search",
    "suggestions",
]
MAX_LIMIT = 50


def get_backend() -> SearchBackend:
    if connection.vendor == "postgresql":
        return PostgresFtsBackend()
    return SqliteFtsBackend()


@dataclass(frozen=True)
class SearchResult:
    kind: str  # "doc" or "lab"
    lang: str
    slug: str
    section: str
    title_html: str
    heading_html: str
    anchor: str
    url: str
    snippet_html: str
    score: float

    @property
    def key(self) -> str:
        """What the golden set names: a doc's slug, or lab:<slug>."""
        return self.slug if self.kind == SearchPage.Kind.DOC else f"lab:{self.slug}"


def query_language(q: str) -> str:
    """The language a query is written in: any Chinese character makes it Chinese."""
    return "zh" if CJK_RE.search(q) else "en"


def search(
    q: str, *, lang: str | None = None, section: str | None = None, kind: str | None = None, limit: int = 10
) -> list[SearchResult]:
    """Ranked doc pages and labs for `q`, each with its best-matching section (a lab's: its step)
    and a highlighted snippet. Without a language filter, pages in the query's language come first."""
    query = parse_query(q, corpus().glossary)
    if not query:
        return []
    hits = get_backend().query(query.terms, Filters(lang or None, section or None, kind or None), min(limit, MAX_LIMIT))
    pattern = highlighter(query.highlight_words)
    keys = term_keys(query.highlight_words)
    typed = term_keys(query.typed_words)
    results = []
    for hit in hits:
        is_doc = hit.kind == SearchPage.Kind.DOC
        results.append(
            SearchResult(
                kind=hit.kind,
                lang=hit.lang,
                slug=hit.slug,
                section=hit.section,
                title_html=mark(hit.title, pattern),
                heading_html=mark(hit.heading, pattern) if hit.anchor else "",
                anchor=hit.anchor,
                url=doc_url(hit.lang, hit.slug, hit.anchor) if is_doc else lab_url(hit.slug, hit.anchor),
                snippet_html=snippet(hit.text or hit.summary, keys, typed),
                score=hit.score,
            )
        )
    if not lang:
        first = query_language(q)
        results.sort(key=lambda r: r.lang != first)  # stable: the ranking holds within each language
    return results


def golden_passes(golden: dict[str, str]) -> bool:
    """A golden query passes when its page or lab is in the top 3 (or, expecting nothing, when
    nothing matches)."""
    results = search(golden["q"], lang=golden["lang"] or None, limit=3)
    if golden["expect"] == GOLDEN_NOTHING:
        return not results
    return golden["expect"] in [r.key for r in results]
