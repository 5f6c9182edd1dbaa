"""SQLite FTS5: porter-stemmed unicode61 tokens over pre-segmented text, ranked by bm25."""

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

# bm25 column weights: title, heading, body, tags (filter words only, never ranked).
WEIGHTS = "10.0, 4.0, 1.0, 0.0"
KIND_WEIGHT = f"(CASE WHEN kind = 'lab' THEN {LAB_WEIGHT} ELSE 1.0 END)"


def tag(name: str, value: str) -> str:
    """A filter word in the `tags` column: letters and digits only, so the tokenizer keeps it whole
    and no filter value can change the MATCH expression around it."""
    return f"zz{name}" + "".join(c for c in value.lower() if c.isascii() and c.isalnum())


def match_expression(terms: list[Term], filters: Filters) -> str:
    """FTS5 query syntax; words are \\w+ only, so quoting them cannot break out of the string."""
    parts = []
    for t in terms:
        phrase = '"' + " ".join(t.words) + '"'
        parts.append(phrase + "*" if t.prefix else phrase)
    expr = "(" + " OR ".join(parts) + ")"
    for name, value in (("lang", filters.lang), ("section", filters.section), ("kind", filters.kind)):
        if value:
            expr += f" AND tags : {tag(name, value)}"
    return expr


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
                        tags,
                        s.anchor,
                        s.heading,
                        s.text,
                    )
                )
        with connection.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {TABLE} (rowid, title, heading, body, tags, anchor, heading_text, body_text)"  # noqa: S608
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                rows,
            )

    def _delete_rows(self, page_ids: list[int]) -> None:
        with connection.cursor() as cur:
            cur.executemany(
                f"DELETE FROM {TABLE} WHERE rowid >= %s AND rowid < %s",  # noqa: S608
                [(pk * ROWS_PER_PAGE, (pk + 1) * ROWS_PER_PAGE) for pk in page_ids],
            )

    def query(self, terms: list[Term], filters: Filters, limit: int) -> list[RawHit]:
        if not terms:
            return []
        # Rows grouped by page (rowid / ROWS_PER_PAGE): ranking reads no stored column. bm25 is
        # negative, more negative is better; the bare `id` beside max() is the best row's (SQLite).
        # Only the best rows are grouped (row_limit) and only the best pages' texts are read, by rowid.
        sql = f"""WITH matched AS MATERIALIZED (
                      SELECT rowid AS id, -bm25({TABLE}, {WEIGHTS}) AS score FROM {TABLE} WHERE {TABLE} MATCH %s
                      ORDER BY bm25({TABLE}, {WEIGHTS}) LIMIT %s),
                  pages AS (SELECT id, id / {ROWS_PER_PAGE} AS page, max(score) AS best, sum(score) AS total
                            FROM matched GROUP BY id / {ROWS_PER_PAGE}),
                  top AS MATERIALIZED (
                      SELECT pages.id, page, (best + {BREADTH} * (total - best)) * {KIND_WEIGHT} AS score
                      FROM pages JOIN {PAGES} ON {PAGES}.id = pages.page ORDER BY score DESC LIMIT %s)
                  SELECT {HIT_COLUMNS}, top.score FROM top
                  JOIN {PAGES} AS p ON p.id = top.page JOIN {TABLE} AS s ON s.rowid = top.id
                  ORDER BY top.score DESC"""  # noqa: S608
        with connection.cursor() as cur:
            cur.execute(sql, [match_expression(terms, filters), row_limit(limit), limit])
            return [RawHit(*row) for row in cur.fetchall()]
