"""The lab catalog: loading, validation errors named by file and field, invalid labs not offered."""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import CommandError, call_command

from labs.catalog import (
    DIFFICULTIES,
    FileSha256Assertion,
    GuestAssertion,
    LabProblem,
    display_path,
    get_catalog,
    load_catalog,
)
from labs.catalog.loader import DEFAULT_ROOT
from labs.services import catalog as catalog_service
from labs.services.catalog import instructions_html

LOCALIZED = {"en": "English", "zh": "中文"}


def _write_yaml(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def _step_data() -> dict[str, Any]:
    return {
        "title": dict(LOCALIZED),
        "setup": ["mkdir -p /tmp/x"],
        "check": [
            {"guest": {"run": "test -f /tmp/x/done", "stdout_regex": "^$"}, "message": dict(LOCALIZED)},
            {"file_sha256": {"path": "/tmp/x/done", "content": "ok\n"}, "message": dict(LOCALIZED)},
            {"domain_xml": {"xpath": "count(/domain/devices/disk)", "equals": "3"}, "message": dict(LOCALIZED)},
            {"block_info": {"target": "vdc", "min_allocation_mib": 1}, "message": dict(LOCALIZED)},
        ],
        "hints": {"en": ["one", "two"], "zh": ["一", "二"]},
        "solution": ["echo ok > /tmp/x/done"],
    }


def make_lab(root: Path, slug: str = "demo", steps: tuple[str, ...] = ("01-first", "02-second")) -> Path:
    """A complete, valid lab folder under `root` (content/labs); its step links a doc heading."""
    lab_dir = root / slug
    _write_yaml(
        lab_dir / "lab.yaml",
        {
            "slug": slug,
            "title": dict(LOCALIZED),
            "summary": dict(LOCALIZED),
            "duration_min": 10,
            "difficulty": "intro",
            "profile": "storage",
            "docs": ["qemu-img"],
            "steps": list(steps),
        },
    )
    for name in steps:
        step_dir = lab_dir / "steps" / name
        _write_yaml(step_dir / "step.yaml", _step_data())
        (step_dir / "en.md").write_text(f"Do [this](doc:qemu-img#create) in {name}.\n")
        (step_dir / "zh.md").write_text(f"在 {name} 中完成。\n")
    return lab_dir


def edit_yaml(path: Path, change: Any) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    _write_yaml(path, data)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty content/labs in tmp_path, with a docs page next to it for `docs:` and links."""
    docs = tmp_path / "content" / "docs" / "en"
    docs.mkdir(parents=True)
    (docs / "qemu-img.md").write_text("---\ntitle: x\n---\n## create {#create}\n")
    return tmp_path / "content" / "labs"


def errors_of(root: Path) -> list[str]:
    return [str(e) for e in load_catalog(root).errors]


def test_valid_lab_is_loaded_with_every_field(root: Path) -> None:
    make_lab(root)
    catalog = load_catalog(root)
    assert catalog.errors == []
    lab = catalog.labs["demo"]
    assert (lab.profile, lab.duration_min, lab.difficulty, lab.docs) == ("storage", 10, "intro", ("qemu-img",))
    assert [s.name for s in lab.steps] == ["01-first", "02-second"]
    step = lab.step(2)
    assert (step.number, step.anchor, step.lab_slug) == (2, "step-2", "demo")
    assert step.title.get("zh-hans") == "中文"
    assert step.title.get("en") == "English"
    assert step.hints[1].zh == "二"
    assert step.setup == ("mkdir -p /tmp/x",)
    guest, sha, xml, block = step.check.assertions
    assert isinstance(guest, GuestAssertion)
    assert (guest.kind, guest.exit_code, guest.timeout_s) == ("guest", 0, 30.0)
    assert isinstance(sha, FileSha256Assertion)
    assert sha.sha256 == hashlib.sha256(b"ok\n").hexdigest()  # hashed on the host from `content`
    assert (xml.kind, block.kind) == ("domain_xml", "block_info")
    with pytest.raises(IndexError):
        lab.step(3)


def test_instructions_render_through_the_kb_renderer_with_doc_links(root: Path) -> None:
    make_lab(root)
    step = load_catalog(root).labs["demo"].step(1)
    html = instructions_html(step, "en")
    assert 'href="/docs/en/qemu-img/#create"' in html or "/qemu-img/#create" in html
    assert "01-first" in html
    assert "01-first" in instructions_html(step, "zh-hans")
    assert "中完成" in instructions_html(step, "zh-hans")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.pop("title"), "lab.yaml: title: required field is missing"),
        (lambda d: d.update(colour="red"), "lab.yaml: colour: unknown field"),
        (lambda d: d["summary"].pop("zh"), "lab.yaml: summary.zh: required field is missing"),
        (lambda d: d["title"].update(en=""), "lab.yaml: title.en: must not be empty"),
        (lambda d: d.update(duration_min="ten"), "lab.yaml: duration_min: expected an integer, got a string"),
        (lambda d: d.update(difficulty="easy"), "lab.yaml: difficulty: 'easy' is not one of intro"),
        (lambda d: d.update(profile="huge"), "lab.yaml: profile: 'huge' is not a vetted profile"),
        (lambda d: d.update(docs=["no-such-doc"]), "lab.yaml: docs[0]: no doc page 'no-such-doc'"),
        (lambda d: d.update(slug="other"), "lab.yaml: slug: 'other' must equal the folder name 'demo'"),
        (lambda d: d.update(steps=["01-first"]), "lab.yaml: steps: folder steps/02-second is not listed"),
        (lambda d: d["steps"].append("03-third"), "lab.yaml: steps[2]: no folder steps/03-third"),
        (lambda d: d["steps"].append("01-first"), "lab.yaml: steps[2]: '01-first' is listed twice"),
        (lambda d: d.update(steps=[]), "lab.yaml: steps: must not be empty"),
    ],
)
def test_lab_yaml_errors_name_file_and_field(root: Path, change: Any, expected: str) -> None:
    lab_dir = make_lab(root)
    make_lab(root, "good")
    edit_yaml(lab_dir / "lab.yaml", change)
    catalog = load_catalog(root)
    assert any(str(e).startswith(str(lab_dir / "lab.yaml")) and expected in str(e) for e in catalog.errors), [
        str(e) for e in catalog.errors
    ]
    assert "demo" not in catalog.labs  # not offered ...
    assert "good" in catalog.labs  # ... while valid labs still are


def _check(index: int, **fields: Any) -> Any:
    def change(data: dict[str, Any]) -> None:
        data["check"][index] = {**data["check"][index], **fields}

    return change


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["check"][0]["guest"].update(stdout_regex="(unclosed"),
            "check[0].guest.stdout_regex: not a valid regex",
        ),
        (lambda d: d["check"][0]["guest"].update(timeout_s=0), "check[0].guest.timeout_s: must be at least 1"),
        (lambda d: d["check"][0]["guest"].update(exit_code=True), "check[0].guest.exit_code: expected an integer"),
        (lambda d: d["check"][0]["guest"].update(json={"path": "a..b", "equals": 1}), "check[0].guest.json.path:"),
        (lambda d: d["check"][0]["guest"].pop("run"), "check[0].guest.run: required field is missing"),
        (lambda d: d["check"][0]["guest"].update(user="nobody"), "check[0].guest.user: unknown field"),
        (lambda d: d["check"][0].pop("message"), "check[0].message: required field is missing"),
        (lambda d: d["check"][0]["message"].pop("zh"), "check[0].message.zh: required field is missing"),
        (_check(1, guest={"run": "true"}), "check[1]: needs exactly one of guest"),
        (lambda d: d["check"][1]["file_sha256"].update(sha256="abc"), "check[1].file_sha256: give exactly one of"),
        (lambda d: d["check"][1]["file_sha256"].update(path="tmp/x"), "check[1].file_sha256.path: must be an absolute"),
        (lambda d: d["check"][2]["domain_xml"].update(xpath="//["), "check[2].domain_xml.xpath: not a valid XPath"),
        (lambda d: d["check"][2]["domain_xml"].update(count=1), "check[2].domain_xml: give exactly one of equals"),
        (lambda d: d["check"][3]["block_info"].update(target="vdz"), "check[3].block_info.target: 'vdz' is not a disk"),
        (lambda d: d["check"][3]["block_info"].pop("min_allocation_mib"), "check[3].block_info: give at least one"),
        (lambda d: d.update(check=[]), "check: expected a non-empty list"),
        (lambda d: d["check"].append("guest"), "check[4]: expected a mapping"),
        (lambda d: d["hints"]["zh"].pop(), "hints: en has 2 entries but zh has 1"),
        (lambda d: d.pop("solution"), "solution: required field is missing"),
        (lambda d: d.update(setup="echo hi"), "setup: expected a list of strings, got a string"),
        (lambda d: d["title"].update(zh=3), "title.zh: expected a string, got int"),
    ],
)
def test_step_yaml_errors_name_file_and_field(root: Path, change: Any, expected: str) -> None:
    lab_dir = make_lab(root)
    step_file = lab_dir / "steps" / "02-second" / "step.yaml"
    edit_yaml(step_file, change)
    catalog = load_catalog(root)
    assert any(str(e).startswith(f"{step_file}: ") and expected in str(e) for e in catalog.errors), [
        str(e) for e in catalog.errors
    ]
    assert catalog.labs == {}


def test_error_paths_are_shown_relative_to_the_repository() -> None:
    step_file = DEFAULT_ROOT / "qemu-img" / "steps" / "03-backing" / "step.yaml"
    error = LabProblem("qemu-img", display_path(step_file), "check[1].guest.stdout_regex", "not a valid regex: x")
    assert str(error) == (
        "content/labs/qemu-img/steps/03-backing/step.yaml: check[1].guest.stdout_regex: not a valid regex: x"
    )


def test_doc_links_in_instructions_must_reach_a_heading(root: Path) -> None:
    lab_dir = make_lab(root)
    (lab_dir / "steps" / "01-first" / "zh.md").write_text("见 [文档](doc:qemu-img#nope) 和 [另一页](doc:missing)。\n")
    errors = errors_of(root)
    zh = f"{lab_dir}/steps/01-first/zh.md"
    assert f"{zh}: doc:qemu-img#nope: no heading with id 'nope' in content/docs/en/qemu-img.md" in errors
    assert f"{zh}: doc:missing: no such doc page" in errors


def test_missing_files_and_bad_yaml_are_reported(root: Path) -> None:
    lab_dir = make_lab(root)
    (lab_dir / "steps" / "01-first" / "zh.md").unlink()
    (lab_dir / "steps" / "02-second" / "en.md").write_text("  \n")
    (lab_dir / "steps" / "02-second" / "step.yaml").write_text("title: [unclosed\n")
    (root / "empty").mkdir()
    errors = errors_of(root)
    assert f"{lab_dir}/steps/01-first/zh.md: file is missing (instructions in this language)" in errors
    assert f"{lab_dir}/steps/02-second/en.md: file is empty" in errors
    assert any(e.startswith(f"{lab_dir}/steps/02-second/step.yaml: not valid YAML") for e in errors), errors
    assert f"{root}/empty/lab.yaml: file is missing" in errors
    assert load_catalog(root).labs == {}


def test_get_catalog_reloads_when_a_file_changes(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("labs.catalog.loader.RECHECK_INTERVAL_S", 0.0)
    lab_dir = make_lab(root)
    first = get_catalog(root)
    assert get_catalog(root) is first  # unchanged files: the cached object
    step_file = lab_dir / "steps" / "01-first" / "step.yaml"
    edit_yaml(step_file, lambda d: d["title"].update(en="Renamed"))
    later = time.time() + 5  # mtime granularity can hide an edit within the same tick
    os.utime(step_file, (later, later))
    assert get_catalog(root).labs["demo"].step(1).title.en == "Renamed"


def test_a_lab_added_since_the_last_look_is_found_by_the_worker_that_runs_it(
    root: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The web process saw the new lab and accepted a start; the host worker looked at the files
    # less than RECHECK_INTERVAL_S ago: running the session must not fail for a lab "not offered".
    monkeypatch.setattr("labs.catalog.loader.RECHECK_INTERVAL_S", 3600.0)
    settings.CONTENT_DIR = root.parent
    root.mkdir()
    assert catalog_service.get_lab("demo") is None  # looked: nothing yet, cached for the hour
    make_lab(root)
    assert catalog_service.get_lab("demo") is None  # within the interval: the cached catalog
    assert catalog_service.require_lab("demo").slug == "demo"
    with pytest.raises(LookupError, match="no lab 'other' is offered"):
        catalog_service.require_lab("other")


def test_shipped_labs_are_valid_and_bilingual() -> None:
    catalog = load_catalog()
    assert [str(e) for e in catalog.errors] == []
    assert {"first-contact", "qemu-img"} <= set(catalog.labs)
    ranks = [DIFFICULTIES.index(lab.difficulty) for lab in catalog.labs.values()]
    assert ranks == sorted(ranks)  # easier labs are listed first
    for lab in catalog.labs.values():
        for step in lab.steps:
            assert step.instructions.en.strip()
            assert step.instructions.zh.strip()
            assert step.solution


# Issue #6: a lab teaches in at least five checked steps; every shipped lab is held to it.
MIN_STEPS = 5
SHIPPED = load_catalog().labs
CJK_RE = re.compile(r"[\u4e00-\u9fff]")


def test_the_labs_of_issue_6_are_shipped() -> None:
    assert {"vfio-userspace", "mdev-mtty", "ublk", "containers-from-scratch", "qemu-img"} <= set(SHIPPED)


@pytest.mark.parametrize("slug", sorted(SHIPPED))
def test_shipped_lab_has_five_steps_each_bilingual_with_check_hints_and_solution(slug: str) -> None:
    lab = SHIPPED[slug]
    assert len(lab.steps) >= MIN_STEPS, f"{slug} has {len(lab.steps)} steps, fewer than {MIN_STEPS}"
    for step in lab.steps:
        where = f"{slug} step {step.number} ({step.name})"
        for text in (step.title, step.instructions):
            assert text.en.strip(), where
            assert text.zh.strip(), where
            assert CJK_RE.search(text.zh), f"{where}: the zh text is not Chinese"
        assert step.check.assertions, f"{where}: no check"
        assert step.hints, f"{where}: no hints"
        for hint in step.hints:
            assert hint.en.strip(), f"{where}: empty hint"
            assert hint.zh.strip(), f"{where}: empty hint"
        assert step.solution, f"{where}: no solution"


def test_labs_check_command_exits_nonzero_and_names_file_and_field(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab_dir = make_lab(root)
    make_lab(root, "good")
    edit_yaml(lab_dir / "lab.yaml", lambda d: d.update(profile="huge"))
    with pytest.raises(CommandError, match="1 invalid lab"):
        call_command("labs", "check", "--root", str(root))
    assert f"{lab_dir}/lab.yaml: profile: 'huge' is not a vetted profile" in capsys.readouterr().err


def test_labs_check_command_passes_on_shipped_labs(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("labs", "check")
    assert "lab(s) valid" in capsys.readouterr().out


def test_labs_list_command_shows_valid_labs_and_flags_invalid_ones(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_lab(root, "good")
    broken = make_lab(root, "broken")
    edit_yaml(broken / "lab.yaml", lambda d: d.pop("summary"))
    call_command("labs", "list", "--root", str(root))
    out = capsys.readouterr().out
    assert "good" in out
    assert "not offered (invalid): broken" in out
