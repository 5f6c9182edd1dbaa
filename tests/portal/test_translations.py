"""The zh-hans catalog is complete: a fuzzy or empty entry shows English to a Chinese reader."""

from __future__ import annotations

import re
from pathlib import Path

PO = Path(__file__).resolve().parents[2] / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"


def _entries() -> list[str]:
    # Entries are separated by blank lines; the first is the header, obsolete ones start with "#~".
    return [e for e in PO.read_text().split("\n\n")[1:] if e.strip() and not e.lstrip().startswith("#~")]


def test_no_fuzzy_entries() -> None:
    fuzzy = [e for e in _entries() if re.search(r"^#,.*\bfuzzy\b", e, re.M)]
    assert fuzzy == []


def test_every_message_is_translated() -> None:
    empty = [e for e in _entries() if re.search(r'^msgstr(\[\d\])? ""\Z', e.strip(), re.M)]
    assert empty == []
    assert len(_entries()) > 100
