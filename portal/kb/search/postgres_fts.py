"""PostgreSQL full-text search: `english` config for EN pages, `simple` over jieba tokens for ZH,
weighted tsvector (title A, headings B, body D) in a GIN index, ranked by ts_rank_cd."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection

from ..text import Term, segment
from .backend import TABLE, IndexDoc, IndexTable, RawHit

CONFIG = {"en": "english", "zh": "simple"}
# ts_rank_cd weights {D, C, B, A}; normalization 1 divides by 1 + log(document length).
RANK = "ts_rank_cd('{0.1, 0.2, 0.4, 1.0}', tsv, q, 1)"


def tsquery_text(terms: list[Term]) -> str:
    """to_tsquery syntax; words are \\w+ only, so single-quoting them is safe."""
    parts = []
    for t in terms:
        phrase = " <-> ".join(f"'{w}'" for w in t.words)
        parts.append(f"{phrase}:*" if t.prefix and len(t.words) == 1 else f"({phrase})")
    return " | ".join(parts)


class PostgresFtsBackend(IndexTable):
    def index(self, docs: Iterable[IndexDoc]) -> None:
        rows = [
            (
                d.lang,
                d.slug,
                d.section,
                CONFIG.get(d.lang, "simple"),
                segment(d.title),
                segment(d.headings),
                segment(d.body),
            )
            for d in docs
        ]
        with connection.cursor() as cur:
            cur.executemany(f"DELETE FROM {TABLE} WHERE lang = %s AND slug = %s", [r[:2] for r in rows])  # noqa: S608
            cur.executemany(
                f"""INSERT INTO {TABLE} (lang, slug, section, tsv) SELECT %s, %s, %s,
                    setweight(to_tsvector(c, %s), 'A') || setweight(to_tsvector(c, %s), 'B')
                    || setweight(to_tsvector(c, %s), 'D') FROM (SELECT %s::regconfig AS c) AS cfg""",  # noqa: S608
                [(r[0], r[1], r[2], r[4], r[5], r[6], r[3]) for r in rows],
            )

    def query(self, terms: list[Term], lang: str | None, section: str | None, limit: int) -> list[RawHit]:
        if not terms:
            return []
        expr = tsquery_text(terms)
        sql = f"""SELECT lang, slug, {RANK} AS rank FROM {TABLE},
                  LATERAL (SELECT CASE WHEN lang = 'en' THEN to_tsquery('english', %s)
                                       ELSE to_tsquery('simple', %s) END AS q) AS query
                  WHERE tsv @@ q"""  # noqa: S608
        rows = self.ranked_rows(sql, [expr, expr], lang, section, "DESC", limit)
        return [RawHit(lang_, slug, rank) for lang_, slug, rank in rows]
