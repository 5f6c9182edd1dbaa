"""`manage.py docs build`: idempotent, incremental, validating, and keeping the index current."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from portal.kb.build import build_docs
from portal.kb.content import short_hash
from portal.kb.models import DocPage, SearchPage
from portal.kb.search import get_backend, search
from portal.kb.search.backend import Filters
from portal.kb.text import parse_query

from .conftest import rebuild

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def test_first_build_renders_everything_and_second_build_nothing(content_copy: Path) -> None:
    first = rebuild(content_copy)
    assert len(first.rendered) + first.unchanged == 14
    assert not first.errors
    second = rebuild(content_copy)
    assert second.rendered == []
    assert second.unchanged == 14
    assert second.removed == []
    assert second.build_hash == first.build_hash
    assert get_backend().indexed_keys("doc") == set(DocPage.objects.values_list("lang", "slug"))


def test_changed_page_is_rendered_again_and_searchable(content_copy: Path) -> None:
    rebuild(content_copy)
    path = content_copy / "docs" / "en" / "mdev.md"
    path.write_text(path.read_text() + "\n## Zebrafish appendix {#zebrafish}\n\nQuuxotic zebrafish.\n")
    report = rebuild(content_copy)
    assert report.rendered == ["en/mdev"]
    page = DocPage.objects.get(lang="en", slug="mdev")
    assert '<h2 id="zebrafish">' in page.html
    hits = search("quuxotic", lang="en")
    assert [(h.slug, h.anchor) for h in hits] == [("mdev", "zebrafish")]


def test_deleted_page_is_removed_from_pages_and_index(content_copy: Path) -> None:
    rebuild(content_copy)
    page_id = SearchPage.objects.get(kind="doc", lang="zh", slug="ublk").pk
    terms = parse_query("用户态块设备").terms
    assert page_id in get_backend().candidate_pages(terms, Filters("zh"), 100)
    (content_copy / "docs" / "zh" / "ublk.md").unlink()
    report = rebuild(content_copy)
    assert report.removed == ["zh/ublk"]
    assert not DocPage.objects.filter(lang="zh", slug="ublk").exists()
    assert ("zh", "ublk") not in get_backend().indexed_keys("doc")
    assert page_id not in get_backend().candidate_pages(terms, Filters("zh"), 100)  # nor in the page stage
    assert all(h.key != "ublk" for h in search("用户态块设备", lang="zh"))


def test_invalid_front_matter_is_reported_with_file_and_field_and_skipped(content_copy: Path) -> None:
    path = content_copy / "docs" / "en" / "vfio.md"
    path.write_text(path.read_text().replace("section: kernel", "section: astrology", 1))
    report = rebuild(content_copy)
    (error,) = report.errors
    assert error.path == path
    assert error.field == "section"
    assert not DocPage.objects.filter(lang="en", slug="vfio").exists()
    assert DocPage.objects.filter(lang="zh", slug="vfio").exists()

    err = io.StringIO()
    with pytest.raises(CommandError, match="1 page"):
        call_command("docs", "build", "--content", str(content_copy), stdout=io.StringIO(), stderr=err)
    assert str(path) in err.getvalue()
    assert "'section'" in err.getvalue()


def test_missing_title_names_the_field(content_copy: Path) -> None:
    path = content_copy / "docs" / "zh" / "mdev.md"
    lines = [ln for ln in path.read_text().splitlines(keepends=True) if not ln.startswith("title:")]
    path.write_text("".join(lines))
    (error,) = build_docs(content_copy).errors
    assert (error.path.name, error.field) == ("mdev.md", "title")


def test_outdated_notice_appears_when_english_changes(content_copy: Path, client: Client) -> None:
    en_path = content_copy / "docs" / "en" / "vfio.md"
    zh_path = content_copy / "docs" / "zh" / "vfio.md"
    # Start from an up-to-date translation whatever the state of the real content.
    text = re.sub(r"(?m)^source_hash: .*$", f"source_hash: {short_hash(en_path.read_bytes())}", zh_path.read_text())
    zh_path.write_text(text)
    rebuild(content_copy)
    assert not DocPage.objects.get(lang="zh", slug="vfio").outdated
    assert "kb-notice-outdated" not in client.get("/docs/zh/vfio/").content.decode()

    en_path.write_text(en_path.read_text() + "\nOne more sentence.\n")
    report = rebuild(content_copy)
    assert report.rendered == ["en/vfio"]  # the translation itself is not re-rendered
    assert DocPage.objects.get(lang="zh", slug="vfio").outdated
    html = client.get("/docs/zh/vfio/").content.decode()
    assert "kb-notice-outdated" in html
    assert 'href="/docs/en/vfio/"' in html


def test_command_prints_counts_and_time(content_copy: Path) -> None:
    out = io.StringIO()
    call_command("docs", "build", "--content", str(content_copy), stdout=out)
    call_command("docs", "build", "--content", str(content_copy), stdout=out)
    last = out.getvalue().strip().splitlines()[-1]
    assert last.startswith("docs: 0 rendered, 14 unchanged, 0 removed, 0 invalid")
    assert last.count("s (build") == 1


def test_search_subcommand_prints_ranked_results(docs: object) -> None:
    out = io.StringIO()
    call_command("docs", "search", "中介设备", "--lang", "zh", stdout=out)
    assert out.getvalue().splitlines()[0].split()[2].startswith("zh/mdev")


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_unknown_lab_in_front_matter_makes_the_page_invalid(content_copy: Path) -> None:
    path = content_copy / "docs" / "en" / "vfio.md"
    _edit(path, "labs: [vfio-userspace]", "labs: [vfio-userspace, vfio-advanced]")
    (error,) = rebuild(content_copy).errors
    assert (error.path, error.field) == (path, "labs")
    assert "vfio-advanced" in error.message
    assert not DocPage.objects.filter(lang="en", slug="vfio").exists()

    err = io.StringIO()
    with pytest.raises(CommandError, match="1 page"):
        call_command("docs", "build", "--content", str(content_copy), stdout=io.StringIO(), stderr=err)
    assert f"error: {path}: field 'labs': no lab 'vfio-advanced'" in err.getvalue()


@pytest.mark.parametrize(
    ("link", "field", "reason"),
    [
        ("lab:vfio-userspace#step-12", "lab:vfio-userspace#step-12", "has steps 1-11"),
        ("lab:vfio-userspace#step-0", "lab:vfio-userspace#step-0", "only point at a step"),
        ("lab:vfio-userspace#setup", "lab:vfio-userspace#setup", "only point at a step"),
        ("lab:vfio-user#step-3", "lab:vfio-user#step-3", "no lab 'vfio-user'"),
    ],
)
def test_lab_link_to_unknown_lab_or_step_makes_the_page_invalid(
    content_copy: Path, link: str, field: str, reason: str
) -> None:
    path = content_copy / "docs" / "zh" / "vfio.md"
    _edit(path, "(lab:vfio-userspace#step-11)", f"({link})")
    (error,) = rebuild(content_copy).errors
    assert (error.path, error.field) == (path, field)
    assert reason in error.message
    assert not DocPage.objects.filter(lang="zh", slug="vfio").exists()
    assert DocPage.objects.filter(lang="en", slug="vfio").exists()


def test_removing_a_lab_step_invalidates_unchanged_pages_that_link_it(content_copy: Path) -> None:
    rebuild(content_copy)
    lab = content_copy / "labs" / "vfio-userspace"
    _edit(lab / "lab.yaml", "  - 11-give-back\n", "")
    shutil.rmtree(lab / "steps" / "11-give-back")
    report = rebuild(content_copy)
    assert {(e.path.parent.name, e.path.name, e.field) for e in report.errors} == {
        ("en", "vfio.md", "lab:vfio-userspace#step-11"),
        ("zh", "vfio.md", "lab:vfio-userspace#step-11"),
    }
    assert not DocPage.objects.filter(slug="vfio").exists()
    assert DocPage.objects.filter(slug="mdev").count() == 2  # checked again, still valid


def test_link_to_a_lab_that_is_not_offered_is_a_warning(content_copy: Path) -> None:
    rebuild(content_copy)
    _edit(content_copy / "labs" / "mdev-mtty" / "lab.yaml", "profile: tiny", "profile: huge")
    report = rebuild(content_copy)
    assert not report.errors
    assert "en/mdev: labs: lab 'mdev-mtty' is not offered (its files are invalid)" in report.warnings
    assert DocPage.objects.filter(slug="mdev").count() == 2
