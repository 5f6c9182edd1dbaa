"""The search-backend interface: one implementation per database vendor.

The index holds one row per section of a searchable page (a doc's heading, a lab's step), keyed
by `SearchPage.id * ROWS_PER_PAGE + position`; a page ranks by its best section (and, less,
its others: BREADTH). Section rows keep
bm25's document frequencies meaningful on a small corpus (a word on most of 7 pages is still on
few of their 150 sections) and give the deep link and snippet in the same query.

A query runs in two stages (#14). The page stage picks the best `candidates(limit)` pages from
TERM_TABLE: for each page and indexed term (the backend's stemmed word), what that term alone
scores in the page, best section plus BREADTH of the others as below, in a btree read best
first, so a query reads at most TERM_POSTINGS x candidates rows per word however many pages
match. The section stage ranks only those pages' sections, with the exact formula, and gives
each page's best section for the deep link and the snippet. Ranking every matching section cost
~1 µs per row and phrase (SQLite), 20 µs (PostgreSQL): 30 ms and 1.2 s at 2,000 pages per language.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from django.db import connection

from ..content import LANGS
from ..models import SearchPage
from ..text import Term, noise_word

TABLE = "kb_search"
TERM_TABLE = "kb_search_term"
TERM_PAGES = "kb_search_term_pages"  # per language and term: how many pages hold it
ROWS_PER_PAGE = 1024  # sections past this are folded into the last row
# A page scores its best section plus this share of its other matching sections: a page about a
# word mentions it throughout, a page with one dense paragraph on it does not.
BREADTH = 0.5
# The page stage keeps this many pages (at least CANDIDATES_PER_RESULT per result asked for) for
# the section stage, which costs about as much per candidate (~20 sections each) as the rest of the
# query. Below every matching page, results can differ from ranking all sections: at 2,000 pages
# per language golden_top3 was the same with 15, 20, 30 and 300 candidates, and with 12 the same on
# PostgreSQL (0.903), higher on SQLite (0.919 against 0.911), for a PostgreSQL p95 of 16-17 ms
# instead of 20-21 (its ts_rank_cd costs ~20 µs a section row).
CANDIDATES = 12
CANDIDATES_PER_RESULT = 1
# Postings read per query word: pages that are not among a word's best can still be candidates
# for the sum of several words.
TERM_POSTINGS = 4
# Indexing this many pages at once, the backend tidies its index after (SQLite merges FTS5's
# segments, PostgreSQL analyzes the tables).
BULK_PAGES = 100
# In the page stage, what the glossary added counts this much of what was typed.
EXPANDED_SHARE = 0.3


def candidates(limit: int) -> int:
    return max(CANDIDATES, limit * CANDIDATES_PER_RESULT)


def candidate_words(terms: list[Term]) -> list[Term]:
    """The page stage's query: every word of every term once, alone (a page-level index knows no
    word order); a prefix stays on its last word. A typed word wins over the same word expanded.
    A phrase's noise words ("1" of compat=1.1) are left out, unless nothing else is left: alone
    they match every page."""
    out: dict[tuple[str, bool], Term] = {}
    for t in terms:
        for i, word in enumerate(t.words):
            prefix = t.prefix and i == len(t.words) - 1
            if (word, prefix) not in out or not t.expanded:
                out[(word, prefix)] = Term((word,), prefix, t.expanded)
    return [t for t in out.values() if not noise_word(t.words[0])] or list(out.values())


# A lab's step and a doc's section on the same subject: the doc explains it, so it ranks first.
LAB_WEIGHT = 0.6
KIND_WEIGHT = f"(CASE WHEN kind = 'lab' THEN {LAB_WEIGHT} ELSE 1.0 END)"
PAGES = SearchPage._meta.db_table


def count_terms(page_ids: list[int], sign: int) -> tuple[str, list[int]]:
    """The statement adding (sign 1, after their terms were inserted) or taking off (sign -1, before
    they are deleted) these pages' terms in TERM_PAGES."""
    sql = f"""INSERT INTO {TERM_PAGES} (lang, term, pages)
              SELECT lang, term, %s * count(*) FROM {TERM_TABLE} WHERE page_id IN ({", ".join(["%s"] * len(page_ids))})
              GROUP BY lang, term
              ON CONFLICT (lang, term) DO UPDATE SET pages = {TERM_PAGES}.pages + excluded.pages"""  # noqa: S608
    return sql, [sign, *page_ids]


def term_impacts(sections: str) -> str:
    """The INSERT filling TERM_TABLE from `sections`, a query of (page_id, lang, kind, section,
    term, r), r being what the term alone scores in one section: a page's impact is its best
    section's plus BREADTH of its others', as the section stage ranks pages."""
    return f"""INSERT INTO {TERM_TABLE} (page_id, lang, kind, section, term, impact)
               SELECT page_id, lang, kind, section, term, (max(r) + {BREADTH} * (sum(r) - max(r))) * {KIND_WEIGHT}
               FROM ({sections}) AS sections GROUP BY page_id, lang, kind, section, term"""  # noqa: S608


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

    def clear(self) -> None:
        """Empty the index (its pages are gone: rows left would be another page's postings)."""

    def candidate_pages(self, terms: list[Term], filters: Filters, count: int) -> list[int]:
        """The page stage: ids of at most `count` pages likely to rank best, best first."""

    def query(self, terms: list[Term], filters: Filters, limit: int) -> list[RawHit]:
        """Pages matching any term, best first, each with its best section: the sections of the
        `candidates(limit)` pages of the page stage, ranked exactly."""


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

    def clear(self) -> None:
        with connection.cursor() as cur:
            for table in (TABLE, TERM_TABLE, TERM_PAGES):
                cur.execute(f"DELETE FROM {table}")  # noqa: S608

    def stems(self, words: list[str], lang: str) -> list[list[str]]:
        """Each word as the index's terms in `lang` (stemmed; none for a stop word)."""
        raise NotImplementedError

    def term_weights(self, lang: str, terms: list[str]) -> dict[str, float]:
        """An inverse document frequency over pages, as bm25 weighs words, but never zero (bm25's is
        on a word on more than half the pages, and a small knowledge base has few pages)."""
        if not terms:
            return {}
        with connection.cursor() as cur:
            placeholders = ", ".join(["%s"] * len(terms))
            cur.execute(
                f"SELECT term, pages FROM {TERM_PAGES} WHERE lang = %s AND term IN ({placeholders})"  # noqa: S608
                f" UNION ALL SELECT '', count(*) FROM {PAGES} WHERE lang = %s",
                [lang, *terms, lang],
            )
            counts = dict(cur.fetchall())
        pages = counts.pop("")
        return {t: math.log(1 + (pages - counts.get(t, 0) + 0.5) / (counts.get(t, 0) + 0.5)) for t in terms}

    def candidate_pages(self, terms: list[Term], filters: Filters, count: int) -> list[int]:
        """The pages with the most impact summed over the query's words: each word's best
        TERM_POSTINGS x `count` postings (a prefix: those of the terms it begins) in one statement."""
        words = candidate_words(terms)
        parts: list[str] = []
        params: list[str | float | int] = []
        where = "".join(
            f" AND {column} = %s" for column, value in (("kind", filters.kind), ("section", filters.section)) if value
        )
        values = [value for value in (filters.kind, filters.section) if value]
        for lang in [filters.lang] if filters.lang else LANGS:
            stems = self.stems([w.words[0] for w in words], lang)
            weights = self.term_weights(
                lang, sorted({s for word, ss in zip(words, stems, strict=True) if not word.prefix for s in ss})
            )
            for word, word_stems in zip(words, stems, strict=True):
                share = EXPANDED_SHARE if word.expanded else 1.0
                for stem in word_stems:
                    match = "term >= %s AND term < %s" if word.prefix else "term = %s"
                    parts.append(
                        f"SELECT * FROM (SELECT page_id, impact * %s AS score FROM {TERM_TABLE}"  # noqa: S608
                        f" WHERE lang = %s AND {match}{where} ORDER BY impact DESC LIMIT %s) AS p{len(parts)}"
                    )
                    bounds = [stem, stem + "\U0010ffff"] if word.prefix else [stem]
                    params += [share * weights.get(stem, 1.0), lang, *bounds, *values, count * TERM_POSTINGS]
        if not parts:
            return []
        postings = " UNION ALL ".join(parts)
        sql = (
            f"SELECT page_id FROM ({postings}) AS postings GROUP BY page_id ORDER BY sum(score) DESC, page_id LIMIT %s"  # noqa: S608
        )
        with connection.cursor() as cur:
            cur.execute(sql, [*params, count])
            return [row[0] for row in cur.fetchall()]
