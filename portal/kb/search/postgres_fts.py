"""PostgreSQL full-text search: `english` config for EN rows, `simple` over jieba tokens for ZH,
weighted tsvector (title A, heading B, body D) in a GIN index, ranked by ts_rank_cd (ts_rank, cheaper,
averages over the query's alternatives: a short title row then beats the section holding the typed
phrase)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection

from ..text import Term, segment
from .backend import (
    BREADTH,
    HIT_COLUMNS,
    LAB_WEIGHT,
    PAGES,
    ROWS_PER_PAGE,
    TABLE,
    Filters,
    IndexDoc,
    IndexTable,
    RawHit,
    fold,
    row_limit,
)

CONFIG = {"en": "english", "zh": "simple"}
# ts_rank_cd weights {D, C, B, A}; normalization 1 divides by 1 + log(document length). Words the
# user typed count fully; what the glossary added (the whole query) counts EXPANDED_WEIGHT more, so a
# section holding the typed word beats one holding only its synonyms.
WEIGHTS = "'{0.1, 0.2, 0.4, 1.0}'"
EXPANDED_WEIGHT = 0.3
RANK = (
    f"ts_rank_cd({WEIGHTS}, tsv, CASE WHEN lang = 'en' THEN q.typed_en ELSE q.typed_other END, 1)"
    f" + {EXPANDED_WEIGHT} * ts_rank_cd({WEIGHTS}, tsv, CASE WHEN lang = 'en' THEN q.en ELSE q.other END, 1)"
)
# One tsquery per configuration: a row matches the one of its language (GIN serves both).
QUERIES = """(SELECT to_tsquery('english', %s) AS en, to_tsquery('simple', %s) AS other,
                     to_tsquery('english', %s) AS typed_en, to_tsquery('simple', %s) AS typed_other) AS q"""
MATCHES = "((lang = 'en' AND tsv @@ q.en) OR (lang <> 'en' AND tsv @@ q.other))"


def tsquery_text(terms: list[Term]) -> str:
    """to_tsquery syntax; words are \\w+ only, so single-quoting them is safe."""
    parts = []
    for t in terms:
        phrase = " <-> ".join(f"'{w}'" for w in t.words)
        parts.append(f"({phrase}:*)" if t.prefix else f"({phrase})")  # a prefix applies to the last word
    return " | ".join(parts)


class PostgresFtsBackend(IndexTable):
    def index(self, docs: Iterable[IndexDoc]) -> None:
        rows = []
        for page, doc in self._pages(docs):
            for position, s in enumerate(fold(doc.sections)):
                title = doc.title if position == 0 else ""
                text = f"{doc.summary} {s.text}" if position == 0 else s.text
                rows.append(
                    (
                        page.pk * ROWS_PER_PAGE + position,
                        page.pk,
                        doc.kind,
                        doc.lang,
                        doc.section,
                        s.anchor,
                        s.heading,
                        s.text,
                        segment(title),
                        segment(s.heading),
                        segment(text),
                        CONFIG.get(doc.lang, "simple"),
                    )
                )
        with connection.cursor() as cur:
            cur.executemany(
                f"""INSERT INTO {TABLE} (id, page_id, kind, lang, section, anchor, heading_text, body_text, tsv)
                    SELECT %s, %s, %s, %s, %s, %s, %s, %s,
                    setweight(to_tsvector(c, %s), 'A') || setweight(to_tsvector(c, %s), 'B')
                    || setweight(to_tsvector(c, %s), 'D') FROM (SELECT %s::regconfig AS c) AS cfg""",  # noqa: S608
                rows,
            )

    def _delete_rows(self, page_ids: list[int]) -> None:
        with connection.cursor() as cur:
            cur.execute(f"DELETE FROM {TABLE} WHERE page_id = ANY(%s)", [page_ids])  # noqa: S608

    def query(self, terms: list[Term], filters: Filters, limit: int) -> list[RawHit]:
        if not terms:
            return []
        expr = tsquery_text(terms)
        typed = tsquery_text([t for t in terms if not t.expanded]) or expr
        where, params = "", [expr, expr, typed, typed]
        for column, value in (("lang", filters.lang), ("section", filters.section), ("kind", filters.kind)):
            if value:
                where += f" AND {column} = %s"
                params.append(value)
        # MATERIALIZED: each row's rank is computed once (inlined, the planner repeats it per use).
        sql = f"""WITH matched AS MATERIALIZED (
                      SELECT page_id, id, {RANK} AS rank FROM {TABLE}, {QUERIES} WHERE {MATCHES} {where}
                      ORDER BY rank DESC LIMIT %s),
                  top AS MATERIALIZED (
                      SELECT page_id, best_id, score * (CASE WHEN kind = 'lab' THEN {LAB_WEIGHT} ELSE 1.0 END) AS score
                      FROM (SELECT page_id, (array_agg(id ORDER BY rank DESC))[1] AS best_id,
                                   max(rank) + {BREADTH} * (sum(rank) - max(rank)) AS score
                            FROM matched GROUP BY page_id) AS pages
                      JOIN {PAGES} ON {PAGES}.id = pages.page_id ORDER BY score DESC LIMIT %s)
                  SELECT {HIT_COLUMNS}, top.score FROM top
                  JOIN {PAGES} AS p ON p.id = top.page_id JOIN {TABLE} AS s ON s.id = top.best_id
                  ORDER BY top.score DESC"""  # noqa: S608
        with connection.cursor() as cur:
            cur.execute(sql, [*params, row_limit(limit), limit])
            return [RawHit(*row) for row in cur.fetchall()]
