"""The search-backend interface: one implementation per database vendor."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from django.db import connection

from ..text import Term

TABLE = "kb_search"


@dataclass(frozen=True)
class IndexDoc:
    """One page as indexed: original text; backends segment it themselves."""

    lang: str
    slug: str
    section: str
    title: str
    headings: str
    body: str


@dataclass(frozen=True)
class RawHit:
    lang: str
    slug: str
    score: float  # higher is better, whatever the backend's native scale


class SearchBackend(Protocol):
    def index(self, docs: Iterable[IndexDoc]) -> None:
        """Insert or replace the rows of these pages."""

    def remove(self, keys: Iterable[tuple[str, str]]) -> None:
        """Delete the rows of these (lang, slug) pages."""

    def indexed_keys(self) -> set[tuple[str, str]]:
        """(lang, slug) of every indexed page."""

    def query(self, terms: list[Term], lang: str | None, section: str | None, limit: int) -> list[RawHit]:
        """Pages matching any term, best first."""


class IndexTable:
    """Row bookkeeping shared by both backends: the index is keyed by (lang, slug) in TABLE."""

    def remove(self, keys: Iterable[tuple[str, str]]) -> None:
        with connection.cursor() as cur:
            cur.executemany(f"DELETE FROM {TABLE} WHERE lang = %s AND slug = %s", list(keys))  # noqa: S608

    def indexed_keys(self) -> set[tuple[str, str]]:
        with connection.cursor() as cur:
            cur.execute(f"SELECT lang, slug FROM {TABLE}")  # noqa: S608
            return {(r[0], r[1]) for r in cur.fetchall()}

    def ranked_rows(
        self, sql: str, params: list[str | int], lang: str | None, section: str | None, order: str, limit: int
    ) -> list[tuple[str, str, float]]:
        """Run a ranking query (`rank` column) with the shared filters; rows are (lang, slug, rank)."""
        if lang:
            sql += " AND lang = %s"
            params.append(lang)
        if section:
            sql += " AND section = %s"
            params.append(section)
        sql += f" ORDER BY rank {order} LIMIT %s"
        params.append(limit)
        with connection.cursor() as cur:
            cur.execute(sql, params)
            return [(r[0], r[1], float(r[2])) for r in cur.fetchall()]
