"""SQLite FTS5: porter-stemmed unicode61 tokens over pre-segmented text, ranked by bm25.

The section stage is one statement whose MATCH also names the candidates' page tags: bm25 reads
each phrase's whole doclist once per statement (its document frequency), so one statement per
page would cost that each time. FTS5's own tokenizer gives the page stage its terms: a temporary
FTS5 table of the indexed sections (or of the query's words) read through fts5vocab."""

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

TOKENIZE = "'porter unicode61 remove_diacritics 2'"
# bm25 column weights: title, heading, body, tags (filter words only, never ranked).
COLUMN_WEIGHTS = {"title": 10.0, "heading": 4.0, "body": 1.0, "tags": 0.0}
WEIGHTS = ", ".join(str(w) for w in COLUMN_WEIGHTS.values())
# bm25's constants in FTS5.
K1, B = 1.2, 0.75
# Scratch FTS5 tables in the connection's temp schema: only their vocabularies are read.
INDEXING = "kb_indexing"
STEMMING = "kb_stemming"
# What a term alone scores in each section just indexed: bm25 without the document frequency
# (the page stage weighs terms by it at query time), the length relative to these sections'.
SECTION_TERMS = f"""SELECT v.doc / {ROWS_PER_PAGE} AS page_id, p.lang, p.kind, p.section, v.term,
        freq * {K1 + 1} / (freq + {K1} * (1 - {B} + {B} * n.len / (SELECT count(*) * 1.0 / count(DISTINCT doc)
                                                                    FROM temp.{INDEXING}_terms))) AS r
    FROM (SELECT doc, term, sum(CASE col {" ".join(f"WHEN '{c}' THEN {w}" for c, w in COLUMN_WEIGHTS.items())} END)
                 AS freq FROM temp.{INDEXING}_terms GROUP BY doc, term) AS v
    JOIN (SELECT doc, count(*) AS len FROM temp.{INDEXING}_terms GROUP BY doc) AS n ON n.doc = v.doc
    JOIN {PAGES} AS p ON p.id = v.doc / {ROWS_PER_PAGE}"""  # noqa: S608


def tag(name: str, value: str) -> str:
    """A filter word in the `tags` column: letters and digits only, so the tokenizer keeps it whole
    and no filter value can change the MATCH expression around it."""
    return f"zz{name}" + "".join(c for c in value.lower() if c.isascii() and c.isalnum())


def match_expression(terms: list[Term], filters: Filters, pages: list[int] | None = None) -> str:
    """FTS5 query syntax; words are \\w+ only, so quoting them cannot break out of the string.
    `pages`: only the sections of these pages."""
    parts = []
    for t in terms:
        phrase = '"' + " ".join(t.words) + '"'
        parts.append(phrase + "*" if t.prefix else phrase)
    expr = "(" + " OR ".join(parts) + ")"
    for name, value in (("lang", filters.lang), ("section", filters.section), ("kind", filters.kind)):
        if value:
            expr += f" AND tags : {tag(name, value)}"
    if pages is not None:
        expr += " AND tags : (" + " OR ".join(tag("page", str(pk)) for pk in pages) + ")"
    return expr


def scratch_table(name: str, columns: str) -> None:
    """A temporary FTS5 table with the index's tokenizer and its fts5vocab `instance` view
    ({name}_terms: term, doc, col, offset), once per connection."""
    with connection.cursor() as cur:
        cur.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{name} USING fts5({columns}, tokenize = {TOKENIZE})")
        cur.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{name}_terms USING fts5vocab(temp, {name}, instance)")


class SqliteFtsBackend(IndexTable):
    def index(self, docs: Iterable[IndexDoc]) -> None:
        rows = []
        for page, doc in self._pages(docs):
            tags = " ".join(
                [tag("lang", doc.lang), tag("kind", doc.kind), *([tag("section", doc.section)] * bool(doc.section))]
            )
            for position, s in enumerate(fold(doc.sections)):
                title = doc.title if position == 0 else ""
                text = f"{doc.summary} {s.text}" if position == 0 else s.text
                rows.append(
                    (
                        page.pk * ROWS_PER_PAGE + position,
                        segment(title),
                        segment(s.heading),
                        segment(text),
                        f"{tags} {tag('page', str(page.pk))}",
                        s.anchor,
                        s.heading,
                        s.text,
                    )
                )
        if not rows:
            return
        scratch_table(INDEXING, "title, heading, body")
        with connection.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {TABLE} (rowid, title, heading, body, tags, anchor, heading_text, body_text)"  # noqa: S608
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                rows,
            )
            cur.executemany(
                f"INSERT INTO temp.{INDEXING} (rowid, title, heading, body) VALUES (%s, %s, %s, %s)",  # noqa: S608
                [row[:4] for row in rows],
            )
            cur.execute(term_impacts(SECTION_TERMS))
            cur.execute(f"DELETE FROM temp.{INDEXING}")  # noqa: S608
            cur.execute(*count_terms(sorted({row[0] // ROWS_PER_PAGE for row in rows}), 1))
            # Many pages at once leave FTS5's index in many segments, each read by every query:
            # merged into one, queries took half the time at 2,000 pages per language (~1.5 s more
            # for a full rebuild). A few pages are left to FTS5's automatic merging.
            if len({row[0] // ROWS_PER_PAGE for row in rows}) >= BULK_PAGES:
                cur.execute(f"INSERT INTO {TABLE} ({TABLE}) VALUES ('optimize')")  # noqa: S608

    def _delete_rows(self, page_ids: list[int]) -> None:
        if not page_ids:
            return
        with connection.cursor() as cur:
            cur.execute(*count_terms(page_ids, -1))
            cur.executemany(
                f"DELETE FROM {TABLE} WHERE rowid >= %s AND rowid < %s",  # noqa: S608
                [(pk * ROWS_PER_PAGE, (pk + 1) * ROWS_PER_PAGE) for pk in page_ids],
            )
            cur.executemany(f"DELETE FROM {TERM_TABLE} WHERE page_id = %s", [(pk,) for pk in page_ids])  # noqa: S608

    def stems(self, words: list[str], lang: str) -> list[list[str]]:
        scratch_table(STEMMING, "word")
        found: list[list[str]] = [[] for _ in words]
        with connection.cursor() as cur:
            cur.executemany(
                f"INSERT INTO temp.{STEMMING} (rowid, word) VALUES (%s, %s)",  # noqa: S608
                list(enumerate(words)),
            )
            cur.execute(f"SELECT doc, term FROM temp.{STEMMING}_terms ORDER BY doc, offset")  # noqa: S608
            for doc, term in cur.fetchall():
                found[doc].append(term)
            cur.execute(f"DELETE FROM temp.{STEMMING}")  # noqa: S608
        return found

    def query(self, terms: list[Term], filters: Filters, limit: int) -> list[RawHit]:
        if not terms:
            return []
        pages = self.candidate_pages(terms, filters, candidates(limit))
        if not pages:
            return []
        # The candidates' section rows (they passed the filters already), grouped by page
        # (rowid / ROWS_PER_PAGE): ranking reads no stored column. bm25 is negative, more negative
        # is better; the bare `id` beside max() is the best row's (SQLite). Only the best pages'
        # texts are read, by rowid.
        sql = f"""WITH matched AS MATERIALIZED (
                      SELECT rowid AS id, -bm25({TABLE}, {WEIGHTS}) AS score FROM {TABLE} WHERE {TABLE} MATCH %s),
                  pages AS (SELECT id, id / {ROWS_PER_PAGE} AS page, max(score) AS best, sum(score) AS total
                            FROM matched GROUP BY id / {ROWS_PER_PAGE}),
                  top AS MATERIALIZED (
                      SELECT pages.id, page, (best + {BREADTH} * (total - best)) * {KIND_WEIGHT} AS score
                      FROM pages JOIN {PAGES} ON {PAGES}.id = pages.page ORDER BY score DESC LIMIT %s)
                  SELECT {HIT_COLUMNS}, top.score FROM top
                  JOIN {PAGES} AS p ON p.id = top.page JOIN {TABLE} AS s ON s.rowid = top.id
                  ORDER BY top.score DESC"""  # noqa: S608
        with connection.cursor() as cur:
            cur.execute(sql, [match_expression(terms, Filters(), pages), limit])
            return [RawHit(*row) for row in cur.fetchall()]
