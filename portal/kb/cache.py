"""Per-process caches keyed on the current build hash, so a rebuild invalidates them everywhere."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from django.core.cache.backends.locmem import LocMemCache

from .models import DocBuild, DocPage
from .text import Glossary

HASH_TTL_S = 1.0  # other processes see a new build within a second, at one tiny query per second

# Local memory on purpose: prepared fragments are large and hot; a network cache would cost more.
# Bounded by count, not by the size of the knowledge base: ~60 KB a page and two entries per page
# (fragment, whole page), so at most ~20 MB per process; the least recently read go first. 600 kept
# a web worker at 252-257 MiB with 2,000 pages per language (target 250), 300 at 238-239 MiB, for
# 10 % fewer pages a second when readers spread over every page (bench/docs.py --pages 2000).
fragments = LocMemCache("virtlab-kb", {"TIMEOUT": None, "OPTIONS": {"MAX_ENTRIES": 300}})
_lock = threading.Lock()
_memo: dict[str, Any] = {"hash": "", "read_at": 0.0}


def current_build_hash() -> str:
    now = time.monotonic()
    if now - _memo["read_at"] > HASH_TTL_S:
        row = DocBuild.objects.values_list("build_hash", flat=True).first()
        _memo.update({"hash": row or "", "read_at": now})
    return str(_memo["hash"])


def note_build(build_hash: str) -> None:
    """Called by the build in this process: no need to wait for the TTL."""
    _memo.update({"hash": build_hash, "read_at": time.monotonic()})


def forget() -> None:
    """Drop every memo (tests that roll back a build)."""
    _memo.update({"hash": "", "read_at": 0.0})
    _corpus.clear()
    fragments.clear()


@dataclass(frozen=True)
class PageInfo:
    """What navigation needs of a page. Its text lives in the search index (the database): per-page
    memory in every web process would grow with the knowledge base."""

    lang: str
    slug: str
    title: str
    summary: str
    section: str
    order: int


@dataclass(frozen=True)
class Corpus:
    build_hash: str
    pages: dict[tuple[str, str], PageInfo]
    glossary: Glossary
    glossary_entries: list[dict[str, Any]]


_corpus: dict[str, Corpus] = {}


def corpus() -> Corpus:
    """Titles, summaries and the glossary of the current build (for search and navigation)."""
    build_hash = current_build_hash()
    found = _corpus.get(build_hash)
    if found is None:
        with _lock:
            rows = DocPage.objects.values_list("lang", "slug", "title", "summary", "section", "order")
            pages = {(r[0], r[1]): PageInfo(*r) for r in rows}
            entries = DocBuild.objects.values_list("glossary", flat=True).first() or []
            found = Corpus(build_hash, pages, Glossary(entries), entries)
            _corpus.clear()
            _corpus[build_hash] = found
    return found
