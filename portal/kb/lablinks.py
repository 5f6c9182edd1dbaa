"""Docs → labs: front-matter `labs:` and `lab:<slug>#step-N` links, checked at build time against
the lab catalog (content/labs), so that a page never links a lab or step that does not exist."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from labs.catalog import Lab, load_catalog

from .content import ContentError, SourcePage

STEP_ANCHOR_RE = re.compile(r"^step-([1-9][0-9]*)$")


@dataclass(frozen=True)
class LabIndex:
    """What the docs may link to: each offered lab's number of steps, and the lab folders that
    exist but are not offered (invalid: the catalog reports why)."""

    steps: dict[str, int]
    not_offered: frozenset[str]
    labs: dict[str, Lab] = dataclasses.field(
        default_factory=dict, compare=False
    )  # the offered labs (search indexes them)

    @property
    def signature(self) -> str:
        """Changes whenever a check's outcome could: pages are checked again on the next build."""
        text = repr((sorted(self.steps.items()), sorted(self.not_offered)))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def lab_index(content_root: Path) -> LabIndex:
    """Load `content_root`/labs afresh (a build must not see a catalog cached seconds ago)."""
    catalog = load_catalog(content_root / "labs", docs_root=content_root / "docs")
    return LabIndex(
        steps={slug: len(lab.steps) for slug, lab in catalog.labs.items()},
        not_offered=frozenset(err.lab for err in catalog.errors),
        labs=dict(catalog.labs),
    )


def check_lab_links(src: SourcePage, links: list[tuple[str, str]], labs: LabIndex) -> list[str]:
    """Raise ContentError for the first link to an unknown lab or step; return warnings for links
    to labs that exist but are currently not offered (their own errors say why)."""
    warnings: list[str] = []
    targets = [("labs", slug, "") for slug in src.labs]
    targets += [(f"lab:{slug}" + (f"#{anchor}" if anchor else ""), slug, anchor) for slug, anchor in links]
    for field, slug, anchor in targets:
        if slug in labs.not_offered:
            warnings.append(f"{src.lang}/{src.slug}: {field}: lab {slug!r} is not offered (its files are invalid)")
            continue
        if slug not in labs.steps:
            raise ContentError(src.path, field, f"no lab {slug!r} in content/labs")
        if not anchor:
            continue
        m = STEP_ANCHOR_RE.match(anchor)
        if m is None:
            raise ContentError(src.path, field, "a lab link may only point at a step: lab:<slug>#step-N")
        if int(m.group(1)) > labs.steps[slug]:
            raise ContentError(src.path, field, f"lab {slug!r} has steps 1-{labs.steps[slug]}")
    return warnings
