"""Knowledge-base fixtures: the real content built once per session, and throw-away copies of it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from pytest_django import DjangoDbBlocker

from portal.kb import cache
from portal.kb.build import BuildReport, build_docs

CONTENT = Path(settings.CONTENT_DIR)


@pytest.fixture(scope="session", autouse=True)
def kb_static() -> None:
    """The manifest static storage needs collected files (scripts/setup.sh does this too)."""
    from django.contrib.staticfiles.storage import staticfiles_storage

    try:
        staticfiles_storage.url("kb/kb.css")
    except ValueError:
        call_command("collectstatic", "--noinput", verbosity=0)


@pytest.fixture(scope="session")
def built_docs(django_db_setup: None, django_db_blocker: DjangoDbBlocker) -> BuildReport:
    """The repository's docs, built into the test database outside any test transaction."""
    with django_db_blocker.unblock():
        report = build_docs(CONTENT)
    cache.forget()
    return report


@pytest.fixture
def docs(built_docs: BuildReport, db: None) -> Iterator[BuildReport]:
    cache.forget()
    yield built_docs
    cache.forget()  # a test that rebuilt (and rolled back) must not leave its pages in memory


@pytest.fixture
def content_copy(tmp_path: Path, docs: BuildReport) -> Path:
    """A writable copy of content/docs (and content/labs, which the docs link to) to break, change
    and rebuild (incrementally: the real content is already built, so only what a test changes is
    rendered again)."""
    for part in ("docs", "labs"):
        shutil.copytree(CONTENT / part, tmp_path / part)
    return tmp_path


def rebuild(root: Path) -> BuildReport:
    report = build_docs(root)
    cache.forget()  # in a test transaction on_commit never fires; the memo must not lag
    return report
