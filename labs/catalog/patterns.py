"""Output patterns (`stdout_regex`), compiled under RE2.

A check's pattern runs on the host over output the learner controls (they are root in the guest and
can make any program print anything). RE2 matches in time linear in the text for every pattern, so
no output can make a match backtrack for minutes; the price is that patterns needing backtracking
(backreferences, lookaround) do not compile, and the loader reports them with file and field.
Patterns are written as for Python's `re` with MULTILINE; `\\Z` (Python's end of text) becomes
RE2's `\\z`. `\\d`, `\\s`, `\\w` and `\\b` are ASCII-only in RE2.
"""

from __future__ import annotations

import functools
import re

import re2


class PatternError(ValueError):
    """The pattern does not compile under RE2; the message says why."""


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # errors reach the caller as PatternError, not RE2's stderr log
    return options


def _translate(pattern: str) -> str:
    """Python's `\\Z` is RE2's `\\z`; every other escape means the same to both (or fails to compile)."""
    out: list[str] = []
    chars = iter(pattern)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        escaped = next(chars, "")
        out.append("\\z" if escaped == "Z" else "\\" + escaped)
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def compile_output_regex(pattern: str) -> re2._Regexp[str]:
    """The pattern as a multi-line RE2 regex (`search` finds it anywhere); PatternError if RE2 refuses it."""
    translated = "(?m)" + _translate(pattern)
    try:
        return re2.compile(translated, _options())
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "rejected"
        reason = (reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)).replace(
            translated, pattern
        )
    try:
        re.compile(pattern)
    except re.error:
        raise PatternError(reason) from None
    # Valid for Python's re, not for RE2: say what RE2 leaves out and why.
    raise PatternError(f"{reason} (checks match with RE2, in linear time: no backreferences or lookaround)")
