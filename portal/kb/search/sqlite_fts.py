"""SQLite FTS5: porter-stemmed unicode61 tokens over pre-segmented text, ranked by bm25."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection

from ..text import Term, segment
from .backend import TABLE, IndexDoc, IndexTable, RawHit

# bm25 column weights: title, headings, body (UNINDEXED columns take no part).
WEIGHTS = "10.0, 4.0, 1.0"


def match_expression(terms: list[Term]) -> str:
    """FTS5 query syntax; words are \\w+ only, so quoting them cannot break out of the string."""
    parts = []
    for t in terms:
        phrase = '"' + " ".join(t.words) + '"'
        parts.append(phrase + "*" if t.prefix else phrase)
    return " OR ".join(parts)


class SqliteFtsBackend(IndexTable):
    def index(self, docs: Iterable[IndexDoc]) -> None:
        rows = [(d.lang, d.slug, d.section, segment(d.title), segment(d.headings), segment(d.body)) for d in docs]
        with connection.cursor() as cur:
            cur.executemany(f"DELETE FROM {TABLE} WHERE lang = %s AND slug = %s", [r[:2] for r in rows])  # noqa: S608
            cur.executemany(
                f"INSERT INTO {TABLE} (lang, slug, section, title, headings, body) VALUES (%s, %s, %s, %s, %s, %s)",  # noqa: S608
                rows,
            )

    def query(self, terms: list[Term], lang: str | None, section: str | None, limit: int) -> list[RawHit]:
        if not terms:
            return []
        sql = f"SELECT lang, slug, bm25({TABLE}, {WEIGHTS}) AS rank FROM {TABLE} WHERE {TABLE} MATCH %s"  # noqa: S608
        rows = self.ranked_rows(sql, [match_expression(terms)], lang, section, "ASC", limit)
        # bm25 is negative, more negative is better.
        return [RawHit(lang_, slug, -rank) for lang_, slug, rank in rows]
