"""What to offer when a query matches nothing: close spellings of its words among the glossary's
terms and the page and lab titles (both languages), read only on that path."""

from __future__ import annotations

import difflib

from ..cache import corpus
from ..models import SearchPage
from ..text import CJK_RE, WORD_RE

MAX_SUGGESTIONS = 6


def _vocabulary() -> dict[str, str]:
    """Lower-cased term → as written: glossary terms (whole) and title words."""
    snap = corpus()
    vocab: dict[str, str] = {}
    for group in snap.glossary.groups:
        for term in group:
            vocab.setdefault(term.lower(), term)
    for title in SearchPage.objects.values_list("title", flat=True):
        for word in WORD_RE.findall(title):
            if len(word) >= 3 and not word.isdigit():
                vocab.setdefault(word.lower(), word)
    return vocab


def suggestions(q: str) -> list[str]:
    """Known terms close to the query or its words (a misspelling, a near miss)."""
    vocab = _vocabulary()
    wanted = [q.strip().lower(), *(w.lower() for w in WORD_RE.findall(q) if len(w) >= 3 or CJK_RE.search(w))]
    found: list[str] = []
    for word in dict.fromkeys(wanted):
        cutoff = 0.5 if CJK_RE.search(word) else 0.75
        for match in difflib.get_close_matches(word, vocab, n=3, cutoff=cutoff):
            if vocab[match] not in found and match != word:
                found.append(vocab[match])
    return found[:MAX_SUGGESTIONS]
