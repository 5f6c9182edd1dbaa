"""Highlighting in the ORIGINAL text: matched terms are found again in the unsegmented text,
everything else is escaped. One implementation for every backend.

The index picks the best section of each page; a query only scans the sections it shows.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from html import escape

from ..text import CJK_RE

SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ied", "ed", "es", "s", "e", "y")
PIECE_RE = re.compile(r"[^\W_]+")  # `_` joins words in identifiers but not in the index's tokens
WIDTH = 200


def stem(word: str) -> str:
    """Close enough to porter for matching: "snapshots" and "snapshotting" share "snapshot"."""
    if CJK_RE.search(word):
        return word
    for suffix in SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def term_keys(words: list[str]) -> list[str]:
    return sorted({stem(p) for w in words for p in PIECE_RE.findall(w.lower())}, key=len, reverse=True)


@functools.lru_cache(maxsize=512)
def _pattern(keys: tuple[str, ...]) -> re.Pattern[str] | None:
    # One lookbehind for all Latin stems (cheaper to compile than one per alternative).
    latin = "|".join(re.escape(k) for k in keys if not CJK_RE.search(k))
    alts = [re.escape(k) for k in keys if CJK_RE.search(k)]
    if latin:
        alts.append(rf"(?<![^\W_])(?:{latin})[^\W_]*")
    return re.compile("|".join(alts), re.I) if alts else None


def highlighter(words: list[str]) -> re.Pattern[str] | None:
    return _pattern(tuple(term_keys(words)))


def mark(text: str, pattern: re.Pattern[str] | None) -> str:
    """Escape `text`, wrapping every match in <mark>."""
    if pattern is None:
        return escape(text)
    out, pos = [], 0
    for m in pattern.finditer(text):
        if m.end() == m.start():
            continue
        out += [escape(text[pos : m.start()]), "<mark>", escape(m.group(0)), "</mark>"]
        pos = m.end()
    out.append(escape(text[pos:]))
    return "".join(out)


def _positions(lower: str, keys: list[str]) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for k in keys:
        start = lower.find(k)
        while start != -1 and len(found) < 400:
            if CJK_RE.search(k) or start == 0 or not lower[start - 1].isalnum():
                found.append((start, k))
            start = lower.find(k, start + len(k))
    return sorted(found)


def snippet(text: str, keys: list[str], typed: list[str] | None = None, width: int = WIDTH) -> str:
    """The window of `text` with the most distinct matches, highlighted, as safe HTML."""
    pattern = _pattern(tuple(keys))
    if len(text) <= width:
        return mark(text, pattern)
    hits = _positions(text.lower(), keys)
    typed_keys = set(typed or ())
    window: Counter[str] = Counter()  # keys of hits[i:j], kept up to date as the window slides
    start, best, j = 0, 0, 0
    for pos, key in hits:
        while j < len(hits) and hits[j][0] < pos + width - width // 5:
            window[hits[j][1]] += 1
            j += 1
        distinct = len(window) + len(typed_keys.intersection(window))  # typed words weigh double
        if distinct > best:
            best, start = distinct, max(0, pos - width // 5)
        window[key] -= 1
        if not window[key]:
            del window[key]
    end = min(len(text), start + width)
    if start > 0:
        space = text.find(" ", start, start + 20)
        start = space + 1 if space != -1 else start
    if end < len(text):
        space = text.rfind(" ", end - 20, end)
        end = space if space != -1 else end
    return ("… " if start > 0 else "") + mark(text[start:end], pattern) + (" …" if end < len(text) else "")
