"""Labs that quote guest/src/vfio-edu.c must quote the code the guest image really runs.

The step texts show the learner the function behind each `vfio-edu` stage; when the program
changes, a stale quote would teach code that no longer exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE = (REPO / "guest" / "src" / "vfio-edu.c").read_text(encoding="utf-8")
QUOTING_LABS = ("vfio-userspace", "mdev-mtty")
C_BLOCK_RE = re.compile(r"^```c\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _step_texts() -> list[Path]:
    return sorted(p for lab in QUOTING_LABS for p in (REPO / "content" / "labs" / lab / "steps").glob("*/*.md"))


def test_the_labs_quote_vfio_edu() -> None:
    quoted = [block for path in _step_texts() for block in C_BLOCK_RE.findall(path.read_text(encoding="utf-8"))]
    assert len(quoted) >= 10


@pytest.mark.parametrize("path", _step_texts(), ids=lambda p: f"{p.parts[-4]}/{p.parts[-2]}/{p.name}")
def test_every_quoted_c_paragraph_is_in_the_source(path: Path) -> None:
    for block in C_BLOCK_RE.findall(path.read_text(encoding="utf-8")):
        # A block may join several functions; each blank-line-separated paragraph must be verbatim.
        for paragraph in block.strip("\n").split("\n\n"):
            assert paragraph in SOURCE, f"{path.name} quotes code that is not in vfio-edu.c:\n{paragraph}"
