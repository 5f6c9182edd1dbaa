"""Loading `content/labs/` into a Catalog: valid labs are offered, invalid ones only reported."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from labs.profiles import PROFILES

from .fields import FieldReader
from .model import DIFFICULTIES, Catalog, Lab, LabProblem, LocalizedText, Step
from .parse import STEP_NAME_RE, disk_targets_of, parse_lab_meta, parse_step_yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = REPO_ROOT / "content" / "labs"
# How often get_catalog() looks at file mtimes; a stat walk of a few hundred files costs ~1 ms.
RECHECK_INTERVAL_S = 2.0
ANCHOR_RE = re.compile(r"\{#([\w-]+)\}")
DOC_LINK_RE = re.compile(r"\]\(doc:([a-z0-9-]+)(?:#([\w-]+))?\)")


def load_catalog(root: Path = DEFAULT_ROOT, docs_root: Path | None = None) -> Catalog:
    """Load and validate every lab folder under `root` (docs slugs are checked in `docs_root`/en)."""
    docs_dir = (docs_root if docs_root is not None else root.parent / "docs") / "en"
    doc_anchors = {p.stem: set(ANCHOR_RE.findall(p.read_text(encoding="utf-8"))) for p in docs_dir.glob("*.md")}
    labs: list[Lab] = []
    errors: list[LabProblem] = []
    for lab_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name[0] not in "._") if root.is_dir() else []:
        lab_errors: list[LabProblem] = []
        lab = _load_lab(lab_dir, doc_anchors, lab_errors)
        errors.extend(lab_errors)
        if lab is not None and not lab_errors:
            labs.append(lab)
    labs.sort(key=lambda lab: (DIFFICULTIES.index(lab.difficulty), lab.slug))
    return Catalog(labs={lab.slug: lab for lab in labs}, errors=errors)


def display_path(path: Path) -> str:
    """A path as authors see it: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _read_yaml(path: Path, reader: FieldReader) -> Any:
    if not path.is_file():
        reader.error("", "file is missing")
        return None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reader.error("", f"not valid YAML: {exc}")
        return None


def _load_lab(lab_dir: Path, doc_anchors: dict[str, set[str]], errors: list[LabProblem]) -> Lab | None:
    name = lab_dir.name
    lab_file = lab_dir / "lab.yaml"
    reader = FieldReader(name, display_path(lab_file), errors)
    data = _read_yaml(lab_file, reader)
    if data is None:
        if lab_file.is_file():
            reader.error("", "file is empty")
        return None
    meta = parse_lab_meta(reader, data)
    if meta is None:
        return None
    if meta["slug"] != name:
        reader.error("slug", f"{meta['slug']!r} must equal the folder name {name!r}")
    profile = PROFILES.get(meta["profile"])
    if profile is None:
        reader.error("profile", f"{meta['profile']!r} is not a vetted profile ({', '.join(sorted(PROFILES))})")
    for index, doc in enumerate(meta["docs"]):
        if doc not in doc_anchors:
            reader.error(f"docs[{index}]", f"no doc page {doc!r} (content/docs/en/{doc}.md)")
    targets = disk_targets_of(profile.disk_count if profile else 1)
    steps = _load_steps(lab_dir, meta["slug"], meta["steps"], targets, reader, doc_anchors)
    if errors or steps is None:
        return None
    return Lab(
        slug=meta["slug"],
        title=meta["title"],
        summary=meta["summary"],
        duration_min=meta["duration_min"],
        difficulty=meta["difficulty"],
        profile=meta["profile"],
        docs=meta["docs"],
        steps=steps,
        path=lab_dir,
    )


def _load_steps(
    lab_dir: Path,
    slug: str,
    names: tuple[str, ...],
    targets: tuple[str, ...],
    lab_reader: FieldReader,
    doc_anchors: dict[str, set[str]],
) -> tuple[Step, ...] | None:
    steps_dir = lab_dir / "steps"
    listed = set(names)
    on_disk = {p.name for p in steps_dir.iterdir() if p.is_dir()} if steps_dir.is_dir() else set()
    for extra in sorted(on_disk - listed):
        lab_reader.error("steps", f"folder steps/{extra} is not listed")
    steps: list[Step] = []
    for index, name in enumerate(names):
        field = f"steps[{index}]"
        if names.index(name) != index:
            lab_reader.error(field, f"{name!r} is listed twice")
        elif not STEP_NAME_RE.match(name):
            lab_reader.error(field, f"{name!r} must look like NN-name (two digits, dash, lower-case name)")
        elif name not in on_disk:
            lab_reader.error(field, f"no folder steps/{name}")
        else:
            step = _load_step(steps_dir / name, slug, index + 1, targets, lab_reader, doc_anchors)
            if step is not None:
                steps.append(step)
    return tuple(steps) if len(steps) == len(names) else None


def _load_step(
    step_dir: Path,
    slug: str,
    number: int,
    targets: tuple[str, ...],
    lab_reader: FieldReader,
    doc_anchors: dict[str, set[str]],
) -> Step | None:
    errors = lab_reader.errors
    before = len(errors)
    texts = {}
    for lang in ("en", "zh"):
        md = step_dir / f"{lang}.md"
        md_reader = FieldReader(lab_reader.lab, display_path(md), errors)
        if not md.is_file():
            md_reader.error("", "file is missing (instructions in this language)")
        elif not md.read_text(encoding="utf-8").strip():
            md_reader.error("", "file is empty")
        else:
            texts[lang] = md.read_text(encoding="utf-8")
            _check_doc_links(texts[lang], doc_anchors, md_reader)
    step_file = step_dir / "step.yaml"
    reader = FieldReader(lab_reader.lab, display_path(step_file), errors)
    data = _read_yaml(step_file, reader)
    fields = parse_step_yaml(reader, data, targets) if data is not None else None
    if data is None and step_file.is_file():
        reader.error("", "file is empty")
    if fields is None or len(errors) > before:
        return None
    return Step(
        lab_slug=slug,
        number=number,
        name=step_dir.name,
        title=fields["title"],
        instructions=LocalizedText(en=texts["en"], zh=texts["zh"]),
        setup=fields["setup"],
        check=fields["check"],
        hints=fields["hints"],
        solution=fields["solution"],
        path=step_dir,
    )


def _check_doc_links(text: str, doc_anchors: dict[str, set[str]], reader: FieldReader) -> None:
    """Every `doc:slug#anchor` link must reach an existing page and heading."""
    for slug, anchor in DOC_LINK_RE.findall(text):
        if slug not in doc_anchors:
            reader.error(f"doc:{slug}", "no such doc page")
        elif anchor and anchor not in doc_anchors[slug]:
            reader.error(f"doc:{slug}#{anchor}", f"no heading with id {anchor!r} in content/docs/en/{slug}.md")


_cache_lock = threading.Lock()
_cache: dict[Path, tuple[float, tuple[int, int], Catalog]] = {}


def _fingerprint(root: Path) -> tuple[int, int]:
    """(newest mtime in ns, number of entries) of the tree: any edit, add or remove changes it."""
    newest, count = 0, 0
    for directory, dirnames, filenames in os.walk(root):
        for entry in [directory, *(os.path.join(directory, n) for n in dirnames + filenames)]:
            try:
                newest = max(newest, os.stat(entry).st_mtime_ns)
            except FileNotFoundError:
                continue
            count += 1
    return newest, count


def get_catalog(root: Path = DEFAULT_ROOT, *, fresh: bool = False) -> Catalog:
    """The process-wide catalog, reloaded when a file under `root` changes (looked for at most every
    RECHECK_INTERVAL_S, or now when `fresh`)."""
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(root)
        if cached is not None and not fresh and now - cached[0] < RECHECK_INTERVAL_S:
            return cached[2]
        fingerprint = _fingerprint(root)
        if cached is not None and cached[1] == fingerprint:
            _cache[root] = (now, fingerprint, cached[2])
            return cached[2]
        catalog = load_catalog(root)
        _cache[root] = (now, fingerprint, catalog)
        return catalog
