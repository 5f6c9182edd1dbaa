"""The search-backend interface: one implementation per database vendor."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .text import Term

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
