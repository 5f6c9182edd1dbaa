"""How many generated examples each fuzzed target gets (hypothesis `max_examples`).

CI runs a bounded budget: the targets are many (every operation for 3 callers, every websocket
consumer for 2) and each example is a real request. A longer hunt raises it without editing a test:
`VIRTLAB_FUZZ_EXAMPLES=500 .venv/bin/pytest tests/hostile`.
"""

from __future__ import annotations

import os

CI_EXAMPLES = 10  # was 25: ~60 % of the fuzzers' time (tests/hostile ran in 50 s, the fuzzers ~17 s of it)


def fuzz_examples() -> int:
    raw = os.environ.get("VIRTLAB_FUZZ_EXAMPLES", "")
    if not raw:
        return CI_EXAMPLES
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"VIRTLAB_FUZZ_EXAMPLES must be a positive whole number, not {raw!r}")
    return int(raw)
