"""The search-backend interface: one implementation per database vendor.

The index holds one row per section of a searchable page (a doc's heading, a lab's step), keyed
by `SearchPage.id * ROWS_PER_PAGE + position`; a page ranks by its best section (and, less,
its others: BREADTH). Section rows keep
bm25's document frequencies meaningful on a small corpus (a word on most of 7 pages is still on
few of their 150 sections) and give the deep link and snippet in the same query.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ..models import SearchPage
from ..text import Term

TABLE = "kb_search"
ROWS_PER_PAGE = 1024  # sections past this are folded into the last row
# A page scores its best section plus this share of its other matching sections: a page about a
# word mentions it throughout, a page with one dense paragraph on it does not.
BREADTH = 0.5
# Pages are ranked from the best-scoring section rows only: grouping every matching row (tens of
# thousands for a common word in a large knowledge base) costs far more than ranking them.
ROWS_PER_RESULT = 20


def row_limit(limit: int) -> int:
    return max(200, limit * ROWS_PER_RESULT)


# A lab's step and a doc's section on the same subject: the doc explains it, so it ranks first.
LAB_WEIGHT = 0.6
PAGES = SearchPage._meta.db_table


@dataclass(frozen=True)
class IndexSection:
    anchor: str  # "" for a page's top (its title, summary and intro)
    heading: str
    text: str


@dataclass(frozen=True)
class IndexDoc:
    """One page as indexed: original text; backends segment it themselves."""

    kind: str  # SearchPage.Kind
    lang: str
    slug: str
    section: str
    title: str
    summary: str
    sections: list[IndexSection]
    content_hash: str = ""


@dataclass(frozen=True)
class RawHit:
    """A matching page and its best section, as written."""

    kind: str
    lang: str
    slug: str
    section: str
    title: str
    summary: str
    anchor: str
    heading: str
    text: str
    score: float  # higher is better, whatever the backend's native scale


# The columns of a hit, read for the few best pages only: the page's from PAGES, the section's
# from TABLE (aliases `p` and `s`).
HIT_COLUMNS = "p.kind, p.lang, p.slug, p.section, p.title, p.summary, s.anchor, s.heading_text, s.body_text"


@dataclass(frozen=True)
class Filters:
    lang: str | None = None
    section: str | None = None
    kind: str | None = None


class SearchBackend(Protocol):
    def index(self, docs: Iterable[IndexDoc]) -> None:
        """Insert or replace these pages and their section rows."""

    def remove(self, keys: Iterable[tuple[str, str, str]]) -> None:
        """Delete these (kind, lang, slug) pages."""

    def indexed_keys(self, kind: str) -> set[tuple[str, str]]:
        """(lang, slug) of every indexed page of `kind`."""

    def query(self, terms: list[Term], filters: Filters, limit: int) -> list[RawHit]:
        """Pages matching any term, best first, each with its best section."""


def fold(sections: list[IndexSection]) -> list[IndexSection]:
    """At most ROWS_PER_PAGE sections: the rest are appended to the last one."""
    if len(sections) <= ROWS_PER_PAGE:
        return sections
    head, tail = sections[: ROWS_PER_PAGE - 1], sections[ROWS_PER_PAGE - 1 :]
    return [*head, IndexSection(tail[0].anchor, tail[0].heading, " ".join(s.heading + " " + s.text for s in tail))]


class IndexTable:
    """Row bookkeeping shared by both backends: pages in SearchPage, sections in TABLE."""

    def _pages(self, docs: Iterable[IndexDoc]) -> list[tuple[SearchPage, IndexDoc]]:
        """Create or update the SearchPage rows of `docs` and delete their old section rows."""
        out = []
        for doc in docs:
            page, _ = SearchPage.objects.update_or_create(
                kind=doc.kind,
                lang=doc.lang,
                slug=doc.slug,
                defaults={
                    "section": doc.section,
                    "title": doc.title,
                    "summary": doc.summary,
                    "content_hash": doc.content_hash,
                },
            )
            out.append((page, doc))
        self._delete_rows([page.pk for page, _ in out])
        return out

    def _delete_rows(self, page_ids: list[int]) -> None:
        raise NotImplementedError  # each backend keys its rows its own way

    def remove(self, keys: Iterable[tuple[str, str, str]]) -> None:
        for kind, lang, slug in keys:
            ids = list(SearchPage.objects.filter(kind=kind, lang=lang, slug=slug).values_list("pk", flat=True))
            self._delete_rows(ids)
            SearchPage.objects.filter(pk__in=ids).delete()

    def indexed_keys(self, kind: str) -> set[tuple[str, str]]:
        return set(SearchPage.objects.filter(kind=kind).values_list("lang", "slug"))
