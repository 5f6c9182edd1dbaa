"""Text handling shared by the search backends and the page cache: segmentation, query terms, glossary."""

from __future__ import annotations

import functools
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

USER_DICT = Path(__file__).with_name("dict.txt")
# `_` joins the words of an identifier (driver_override): each is a word of its own, as both
# backends' tokenizers split there too.
WORD_RE = re.compile(r"[^\W_]+")
CJK_RE = re.compile(r"[\u3400-\u9fff]")
MAX_QUERY = 200
# Words that carry no meaning in a query; bm25 would weigh them little anyway, but they add noise.
_STOP_WORDS = (
    "a an and are as at be by can do does for from how i in is it of on or the to vs what with "
    "的 和 与 及 是 在 了 吗 呢 把 被 对 或 中 之 个 什么 怎么 如何 区别"
)
STOP = frozenset(_STOP_WORDS.split())

_lock = threading.Lock()
_jieba: Any = None


def jieba() -> Any:
    """jieba with VirtLab's virtualization dictionary, loaded once per process."""
    global _jieba
    if _jieba is None:
        with _lock:
            if _jieba is None:
                import jieba as jb

                jb.setLogLevel(logging.WARNING)
                jb.initialize()
                jb.load_userdict(str(USER_DICT))
                _jieba = jb
    return _jieba


def words(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


def segment(text: str) -> str:
    """Space-joined search tokens (jieba's search mode; Latin words pass through, lower-cased)."""
    return " ".join(w for tok in jieba().cut_for_search(text) for w in words(tok))


@dataclass(frozen=True)
class Term:
    """One OR-ed query element: a single word or a phrase (words adjacent), optionally a prefix."""

    words: tuple[str, ...]
    prefix: bool = False
    expanded: bool = False  # added by the glossary, not typed by the user


@dataclass
class Query:
    terms: list[Term] = field(default_factory=list)

    @property
    def highlight_words(self) -> list[str]:
        found = {w for t in self.terms for w in t.words if w not in STOP}
        # jieba's search mode also yields the parts of a typed word (设备 of 中介设备): searching
        # for the parts helps recall, marking them everywhere only adds noise.
        typed = [w for t in self.terms if not t.expanded for w in t.words if CJK_RE.search(w)]
        found -= {w for w in typed if any(w != o and w in o for o in typed)}
        return sorted(found, key=len, reverse=True)

    @property
    def typed_words(self) -> list[str]:
        return sorted({w for t in self.terms if not t.expanded for w in t.words if w not in STOP}, key=len)

    def __bool__(self) -> bool:
        return bool(self.terms)


class Glossary:
    """Term groups from content/docs/glossary: any member found in a query adds all the others."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.groups: list[list[str]] = []
        lookup: dict[str, int] = {}
        for entry in entries:
            members = [entry["en"], *entry.get("zh", []), *entry.get("aliases", [])]
            self.groups.append(members)
            for m in members:
                lookup.setdefault(m.lower(), len(self.groups) - 1)
        self.lookup = lookup
        phrases = sorted(lookup, key=len, reverse=True)
        # Latin phrases match on word boundaries; CJK phrases anywhere (no spaces in Chinese).
        alts = [re.escape(p) if CJK_RE.search(p) else rf"(?<!\w){re.escape(p)}(?!\w)" for p in phrases]
        self.pattern = re.compile("|".join(alts)) if alts else None

    def expand(self, text: str) -> list[str]:
        if self.pattern is None:
            return []
        out: list[str] = []
        for m in self.pattern.finditer(text.lower()):
            group = self.groups[self.lookup[m.group(0)]]
            out.extend(g for g in group if g.lower() != m.group(0))
        return out


def _typed_prefix(word: str) -> str:
    """What the last word, still being typed, is searched as. Stemmed index tokens are often
    shorter than what was typed ("paravirtualiz" is indexed as "paravirtu"), so a long word drops
    a few letters; never below 7, as the backends stem a prefix too ("opens" would become "open")
    and a stub matches unrelated words ("ban": bandwidth)."""
    return word[: max(7, len(word) - 4)] if len(word) > 7 else word


def noise_word(word: str) -> bool:
    """A word that alone finds nearly every section and ranks none: a stop word, a single Latin
    letter or a number of one or two digits ("1" of "compat=1.1"). Inside a phrase it still counts."""
    return word in STOP or (len(word) == 1 and not CJK_RE.search(word)) or (word.isdigit() and len(word) <= 2)


def parse_query(q: str, glossary: Glossary | None = None) -> Query:
    """Segment a (possibly mixed-language) query, expand it through the glossary.

    Chinese runs are segmented by jieba. A Latin compound (driver_override, io.max, human|json)
    is searched as written (its words adjacent) and, secondarily, word by word. The last Latin word is also a
    prefix unless the query ends in a space: search-as-you-type.
    """
    q = q[:MAX_QUERY]
    query = Query()
    seen: set[tuple[tuple[str, ...], bool]] = set()

    def add(term: Term) -> None:
        key = (term.words, term.prefix)
        if term.words and key not in seen and not (len(term.words) == 1 and noise_word(term.words[0])):
            seen.add(key)
            query.terms.append(term)

    chunks = q.split()
    for i, chunk in enumerate(chunks):
        if CJK_RE.search(chunk):
            for tok in jieba().cut_for_search(chunk):
                add(Term(tuple(words(tok))))
            continue
        parts = tuple(words(chunk))
        if not parts:
            continue
        add(Term(parts))
        if len(parts) > 1:  # each word alone too, as a fallback: ranked like a glossary expansion
            for part in parts:
                add(Term((part,), expanded=True))
        typing = i == len(chunks) - 1 and not q[-1:].isspace()
        if typing and len(parts[-1]) >= 2 and not parts[-1].isdigit():
            add(Term((*parts[:-1], _typed_prefix(parts[-1])), prefix=True))
    for phrase in glossary.expand(q) if glossary else []:
        # A multi-word expansion is searched as a phrase of its segmented words.
        add(Term(phrase_words(phrase), expanded=True))
    return query


@functools.lru_cache(maxsize=4096)
def phrase_words(phrase: str) -> tuple[str, ...]:
    """A glossary term's words (glossary terms are few and fixed: segment each once)."""
    return tuple(w for tok in jieba().cut(phrase) for w in words(tok))
