"""Reading content/docs: front matter, its validation, the glossary and the golden queries."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

SECTIONS = ("fundamentals", "kernel", "storage", "qemu", "containers")
LANGS = ("en", "zh")
FRONT_RE = re.compile(r"\A---\n(.*?)\n---\n?(.*)\Z", re.S)
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
HASH_RE = re.compile(r"^[0-9a-f]{12}$")
# The pictures a page may show, content/docs/img/<name>: one pattern for the renderer's links and the
# URL that serves them (no separators, no dots but the extension's).
IMAGE_NAME = r"[\w-]+\.(?:svg|png)"


class ContentError(Exception):
    """A content file that cannot be published: names the file and the field."""

    def __init__(self, path: Path, field: str, message: str) -> None:
        super().__init__(f"{path}: {field}: {message}")
        self.path = path
        self.field = field
        self.message = message


@dataclass(frozen=True)
class SourcePage:
    path: Path
    lang: str
    slug: str
    title: str
    section: str
    order: int
    summary: str
    labs: list[str]
    related: list[str]
    updated: dt.date | None
    source_hash: str
    body: str


def docs_dir(root: Path | None = None) -> Path:
    return (root or settings.CONTENT_DIR) / "docs"


def short_hash(data: bytes) -> str:
    """The 12-hex fingerprint FORMAT.md uses for `source_hash`."""
    return hashlib.sha256(data).hexdigest()[:12]


def _slug_list(path: Path, meta: dict[str, Any], name: str) -> list[str]:
    value = meta.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and SLUG_RE.match(v) for v in value):
        raise ContentError(path, name, "must be a list of slugs")
    return list(value)


def _text(path: Path, meta: dict[str, Any], name: str) -> str:
    value = meta.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ContentError(path, name, "is required and must be non-empty text")
    return value.strip()


def parse_page(path: Path, text: str, lang: str) -> SourcePage:
    """Split front matter from body and validate every field (ContentError names the first bad one)."""
    m = FRONT_RE.match(text)
    if not m:
        raise ContentError(path, "front matter", "missing: the file must start with a '---' YAML block")
    try:
        meta = yaml.safe_load(m.group(1))
    except yaml.YAMLError as exc:
        raise ContentError(path, "front matter", f"invalid YAML: {exc}") from exc
    if not isinstance(meta, dict):
        raise ContentError(path, "front matter", "must be a mapping")
    slug = _text(path, meta, "slug")
    if slug != path.stem or not SLUG_RE.match(slug):
        raise ContentError(path, "slug", f"{slug!r} must equal the file name {path.stem!r}")
    section = meta.get("section")
    if section not in SECTIONS:
        raise ContentError(path, "section", f"{section!r} is not one of {', '.join(SECTIONS)}")
    order = meta.get("order")
    if not isinstance(order, int) or isinstance(order, bool):
        raise ContentError(path, "order", "must be an integer")
    updated = meta.get("updated")
    if updated is not None and not isinstance(updated, dt.date):
        raise ContentError(path, "updated", "must be a date (YYYY-MM-DD)")
    source_hash = str(meta.get("source_hash") or "")
    if source_hash and not HASH_RE.match(source_hash):
        raise ContentError(path, "source_hash", "must be 12 lowercase hex digits")
    if lang == "en" and source_hash:
        raise ContentError(path, "source_hash", "only translations carry a source_hash")
    return SourcePage(
        path=path,
        lang=lang,
        slug=slug,
        title=_text(path, meta, "title"),
        section=section,
        order=order,
        summary=_text(path, meta, "summary"),
        labs=_slug_list(path, meta, "labs"),
        related=_slug_list(path, meta, "related"),
        updated=updated,
        source_hash=source_hash,
        body=m.group(2),
    )


def page_files(root: Path | None = None) -> dict[tuple[str, str], Path]:
    """(lang, slug) → file for every Markdown page on disk."""
    base = docs_dir(root)
    return {(lang, p.stem): p for lang in LANGS for p in sorted((base / lang).glob("*.md"))}


def load_glossary(root: Path | None = None) -> list[dict[str, Any]]:
    """All glossary entries as {en, zh: [...], aliases: [...]} (malformed entries raise ContentError)."""
    entries: list[dict[str, Any]] = []
    for path in sorted((docs_dir(root) / "glossary").glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or []
        for i, item in enumerate(data):
            if not isinstance(item, dict) or not isinstance(item.get("en"), str):
                raise ContentError(path, f"[{i}].en", "each entry needs an English term")
            zh = item.get("zh") or []
            aliases = item.get("aliases") or []
            entries.append(
                {
                    "en": item["en"],
                    "zh": [str(z) for z in zh],
                    "aliases": [str(a) for a in aliases],
                    "source": path.stem,
                }
            )
    return entries


GOLDEN_NOTHING = "nothing"  # a golden query's `expect` when it must match nothing


def load_golden(root: Path | None = None) -> list[dict[str, str]]:
    """Golden queries: {q, lang ("" for both), expect (a doc slug, lab:<slug>, or GOLDEN_NOTHING)}."""
    queries: list[dict[str, str]] = []
    for path in sorted((docs_dir(root) / "golden").glob("*.yaml")):
        queries.extend(
            {"q": str(i["q"]), "lang": str(i["lang"]), "expect": str(i["expect"])}
            for i in yaml.safe_load(path.read_text()) or []
        )
    return queries
