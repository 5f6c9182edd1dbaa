"""PostgreSQL full-text search: `english` config for EN rows, `simple` over jieba tokens for ZH,
weighted tsvector (title A, heading B, body D) in a GIN index, ranked by ts_rank_cd (ts_rank, cheaper,
averages over the query's alternatives: a short title row then beats the section holding the typed
phrase).

The page stage's terms are the lexemes of each section's tsvector: TERM_TABLE is filled from
them by one statement (unnest), a query's words are stemmed by to_tsvector. Ranking page-level
tsvectors instead cost 50-100 ms at 2,000 pages per language, most of it detoasting them (~15 kB
each)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection

from ..text import Term, segment
from .backend import (
    BREADTH,
    BULK_PAGES,
    HIT_COLUMNS,
    KIND_WEIGHT,
    PAGES,
    ROWS_PER_PAGE,
    TABLE,
    TERM_PAGES,
    TERM_TABLE,
    Filters,
    IndexDoc,
    IndexTable,
    RawHit,
    candidates,
    count_terms,
    fold,
    term_impacts,
)

CONFIG = {"en": "english", "zh": "simple"}
# ts_rank_cd weights {D, C, B, A}; normalization 1 divides by 1 + log(document length). Words the
# user typed count fully; what the glossary added (the whole query) counts EXPANDED_WEIGHT more, so a
# section holding the typed word beats one holding only its synonyms.
RANK_WEIGHTS = {"D": 0.1, "C": 0.2, "B": 0.4, "A": 1.0}
WEIGHTS = "'{" + ", ".join(str(w) for w in RANK_WEIGHTS.values()) + "}'"
EXPANDED_WEIGHT = 0.3
# What a lexeme alone scores in each section of the pages just indexed: ts_rank_cd's weight for each
# occurrence, normalized by 1 + log(length) as the ranking is.
WEIGHT_OF = "CASE w " + " ".join(f"WHEN '{k}' THEN {v}" for k, v in RANK_WEIGHTS.items()) + " END"
SECTION_TERMS = f"""SELECT s.page_id, s.lang, s.kind, s.section, u.lexeme AS term,
        (SELECT sum({WEIGHT_OF}) FROM unnest(u.weights) AS w) / (1 + ln(length(s.tsv))) AS r
    FROM {TABLE} AS s, unnest(s.tsv) AS u WHERE s.page_id = ANY(%s)"""  # noqa: S608
TYPED_RANK = f"ts_rank_cd({WEIGHTS}, tsv, CASE WHEN lang = 'en' THEN q.typed_en ELSE q.typed_other END, 1)"
EXPANDED_RANK = f"ts_rank_cd({WEIGHTS}, tsv, CASE WHEN lang = 'en' THEN q.en ELSE q.other END, 1)"
RANK = f"{TYPED_RANK} + {EXPANDED_WEIGHT} * {EXPANDED_RANK}"
# The same when the glossary added nothing, at half the cost (ts_rank_cd is ~20 µs a row).
TYPED_ONLY_RANK = f"{1 + EXPANDED_WEIGHT} * {TYPED_RANK}"
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
        if not rows:
            return
        with connection.cursor() as cur:
            cur.executemany(
                f"""INSERT INTO {TABLE} (id, page_id, kind, lang, section, anchor, heading_text, body_text, tsv)
                    SELECT %s, %s, %s, %s, %s, %s, %s, %s,
                    setweight(to_tsvector(c, %s), 'A') || setweight(to_tsvector(c, %s), 'B')
                    || setweight(to_tsvector(c, %s), 'D') FROM (SELECT %s::regconfig AS c) AS cfg""",  # noqa: S608
                rows,
            )
            pages = sorted({row[1] for row in rows})
            cur.execute(term_impacts(SECTION_TERMS), [pages])
            cur.execute(*count_terms(pages, 1))
            if len(pages) >= BULK_PAGES:  # the planner's statistics, before autovacuum comes by
                cur.execute(f"ANALYZE {TABLE}, {TERM_TABLE}, {TERM_PAGES}")

    def _delete_rows(self, page_ids: list[int]) -> None:
        if not page_ids:
            return
        with connection.cursor() as cur:
            cur.execute(*count_terms(page_ids, -1))
            cur.execute(f"DELETE FROM {TABLE} WHERE page_id = ANY(%s)", [page_ids])  # noqa: S608
            cur.execute(f"DELETE FROM {TERM_TABLE} WHERE page_id = ANY(%s)", [page_ids])  # noqa: S608

    def stems(self, words: list[str], lang: str) -> list[list[str]]:
        with connection.cursor() as cur:
            cur.execute(
                "SELECT tsvector_to_array(to_tsvector(%s::regconfig, word))"
                " FROM unnest(%s::text[]) WITH ORDINALITY AS w(word, n) ORDER BY n",
                [CONFIG.get(lang, "simple"), words],
            )
            return [list(row[0]) for row in cur.fetchall()]

    def query(self, terms: list[Term], filters: Filters, limit: int) -> list[RawHit]:
        if not terms:
            return []
        pages = self.candidate_pages(terms, filters, candidates(limit))
        if not pages:
            return []
        expr = tsquery_text(terms)
        typed = tsquery_text([t for t in terms if not t.expanded]) or expr
        # The candidates' sections (btree on page_id; they passed the filters already). MATERIALIZED:
        # each row's rank is computed once (inlined, the planner repeats it per use).
        rank = RANK if typed != expr else TYPED_ONLY_RANK
        sql = f"""WITH matched AS MATERIALIZED (
                      SELECT page_id, id, {rank} AS rank FROM {TABLE}, {QUERIES}
                      WHERE page_id = ANY(%s) AND {MATCHES}),
                  top AS MATERIALIZED (
                      SELECT page_id, best_id, score * {KIND_WEIGHT} AS score
                      FROM (SELECT page_id, (array_agg(id ORDER BY rank DESC))[1] AS best_id,
                                   max(rank) + {BREADTH} * (sum(rank) - max(rank)) AS score
                            FROM matched GROUP BY page_id) AS pages
                      JOIN {PAGES} ON {PAGES}.id = pages.page_id ORDER BY score DESC LIMIT %s)
                  SELECT {HIT_COLUMNS}, top.score FROM top
                  JOIN {PAGES} AS p ON p.id = top.page_id JOIN {TABLE} AS s ON s.id = top.best_id
                  ORDER BY top.score DESC"""  # noqa: S608
        with connection.cursor() as cur:
            cur.execute(sql, [expr, expr, typed, typed, pages, limit])
            return [RawHit(*row) for row in cur.fetchall()]
