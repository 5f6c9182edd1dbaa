"""`docs build`: render changed pages ahead of time, store them, keep the search index current."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.db import transaction

from . import cache
from .content import SECTIONS, ContentError, SourcePage, docs_dir, load_glossary, page_files, parse_page, short_hash
from .labindex import index_labs
from .lablinks import check_lab_links, lab_index
from .markdown import Rendered, render_markdown
from .models import DocBuild, DocPage, SearchPage
from .search import IndexDoc, IndexSection, get_backend
from .text import USER_DICT

# Bump when rendering changes so that every page is rendered again.
RENDERER_VERSION = "8"


@dataclass
class BuildReport:
    rendered: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    errors: list[ContentError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    indexed: int = 0
    labs_indexed: list[str] = field(default_factory=list)
    build_hash: str = ""
    seconds: float = 0.0


def _content_hash(data: bytes, inputs: str) -> str:
    return hashlib.sha256(f"{RENDERER_VERSION}\0{inputs}\0".encode() + data).hexdigest()


def _store(src: SourcePage, rendered: Rendered, content_hash: str, en_hash: str) -> DocPage:
    page, _ = DocPage.objects.update_or_create(
        lang=src.lang,
        slug=src.slug,
        defaults={
            "title": src.title,
            "section": src.section,
            "section_rank": SECTIONS.index(src.section),
            "order": src.order,
            "summary": src.summary,
            "html": rendered.html,
            "toc_json": [{"level": h.level, "id": h.id, "title": h.title} for h in rendered.toc],
            "sections_json": [{"id": s.id, "heading": s.heading, "text": s.text} for s in rendered.sections],
            "anchors": sorted({t.id for t in rendered.toc} | {s.id for s in rendered.sections if s.id}),
            "labs": src.labs,
            "related": src.related,
            "content_hash": content_hash,
            "source_hash": src.source_hash,
            "en_hash": en_hash,
            "updated": src.updated,
        },
    )
    page.doc_links = rendered.doc_links  # type: ignore[attr-defined]  # checked after all pages exist
    return page


def _index_doc(page: DocPage) -> IndexDoc:
    # The top section's heading is the page title: indexed once, as the title.
    sections = [IndexSection(s["id"], s["heading"] if s["id"] else "", s["text"]) for s in page.sections_json]
    return IndexDoc("doc", page.lang, page.slug, page.section, page.title, page.summary, sections)


def _check_links(pages: list[DocPage], report: BuildReport) -> None:
    if not pages:  # nothing rendered: every page's links were checked when it was
        return
    anchors: dict[tuple[str, str], set[str]] = {
        (lang, slug): set(ids) for lang, slug, ids in DocPage.objects.values_list("lang", "slug", "anchors")
    }
    for page in pages:
        for slug, anchor in getattr(page, "doc_links", []):
            target = anchors.get((page.lang, slug))
            if target is None:
                report.warnings.append(f"{page.lang}/{page.slug}: link to unknown page doc:{slug}")
            elif anchor and anchor not in target:
                report.warnings.append(f"{page.lang}/{page.slug}: link to unknown anchor doc:{slug}#{anchor}")
        for slug in page.related:
            if (page.lang, slug) not in anchors and ("en", slug) not in anchors:
                report.warnings.append(f"{page.lang}/{page.slug}: related page {slug!r} does not exist")


@transaction.atomic
def build_docs(root: Path | None = None, *, force: bool = False) -> BuildReport:
    """Bring DocPage rows and the search index in line with content/docs (idempotent)."""
    started = time.monotonic()
    report = BuildReport()
    files = page_files(root)
    labs = lab_index(docs_dir(root).parent)
    # Besides the page itself: the lab catalog (a removed lab or step re-checks every page's
    # links) and the segmentation dictionary (the index and term counts depend on it).
    inputs = f"{labs.signature}:{short_hash(USER_DICT.read_bytes())}"
    existing = {(p.lang, p.slug): p for p in DocPage.objects.only("lang", "slug", "content_hash", "en_hash")}
    en_hashes = {slug: short_hash(path.read_bytes()) for (lang, slug), path in files.items() if lang == "en"}
    changed: list[DocPage] = []
    valid: set[tuple[str, str]] = set()
    for key, path in files.items():
        data = path.read_bytes()
        content_hash = _content_hash(data, inputs)
        en_hash = en_hashes.get(key[1], "") if key[0] != "en" else ""
        old = existing.get(key)
        if old is not None and old.content_hash == content_hash and not force:
            valid.add(key)
            report.unchanged += 1
            if old.en_hash != en_hash:  # the EN original changed: only the outdated flag moves
                DocPage.objects.filter(pk=old.pk).update(en_hash=en_hash)
            continue
        try:
            src = parse_page(path, data.decode("utf-8"), key[0])
            rendered = render_markdown(src.body, lang=src.lang, title=src.title)
            report.warnings += check_lab_links(src, rendered.lab_links, labs)
        except (ContentError, UnicodeDecodeError) as exc:
            report.errors.append(exc if isinstance(exc, ContentError) else ContentError(path, "encoding", str(exc)))
            continue
        valid.add(key)
        changed.append(_store(src, rendered, content_hash, en_hash))
        report.rendered.append(f"{key[0]}/{key[1]}")

    gone = [key for key in existing if key not in valid]
    for lang, slug in gone:
        DocPage.objects.filter(lang=lang, slug=slug).delete()
        report.removed.append(f"{lang}/{slug}")

    backend = get_backend()
    if not SearchPage.objects.exists():
        # No page is indexed, yet the index may hold rows (the page table was emptied without it,
        # as a test's flush does): they would compete with the pages indexed now.
        backend.clear()
    backend.remove(("doc", lang, slug) for lang, slug in gone)
    # e.g. a fresh index: index what is not indexed yet
    missing = valid - backend.indexed_keys("doc")
    if missing:
        fields = ("lang", "slug", "section", "title", "summary", "sections_json")
        changed_keys = {(c.lang, c.slug) for c in changed}
        stored = DocPage.objects.only(*fields).iterator()
        to_index = changed + [p for p in stored if (p.lang, p.slug) in missing and (p.lang, p.slug) not in changed_keys]
    else:
        to_index = changed
    backend.index(_index_doc(p) for p in to_index)
    report.indexed = len(to_index)
    report.labs_indexed = index_labs(labs.labs, backend)
    _check_links(changed, report)

    try:
        glossary = load_glossary(root)
    except ContentError as exc:
        report.errors.append(exc)
        glossary = []
    fingerprint = hashlib.sha256()
    for p in DocPage.objects.order_by("lang", "slug").values_list("lang", "slug", "content_hash", "en_hash"):
        fingerprint.update("|".join(p).encode())
    fingerprint.update(repr(glossary).encode())
    report.build_hash = fingerprint.hexdigest()
    DocBuild.objects.exclude(pk=1).delete()
    DocBuild.objects.update_or_create(pk=1, defaults={"build_hash": report.build_hash, "glossary": glossary})
    transaction.on_commit(lambda: cache.note_build(report.build_hash))
    report.seconds = time.monotonic() - started
    return report
