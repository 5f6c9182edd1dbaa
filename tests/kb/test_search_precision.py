"""Search precision (#14): words inside compounds, queries that match nothing, both languages by
default with the query's language first, and labs beside the doc pages. On the vendor's backend
(SQLite FTS5 here, PostgreSQL in the -m postgres run)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client

from portal.kb.search import search

from .conftest import rebuild

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("docs")]

# Made-up words, so that only this page can match them.
COMPOUNDS = """---
title: "Compound words"
slug: compounds
section: qemu
order: 999
summary: "Words joined by punctuation."
---
Intro.

## Identifiers {#identifiers}

Write the path to `zorblax_quintessa`, then read `flimflam.gronkle` and `snarkle/boojumo`.

## Options {#options}

Pick `--mode=alpharix|betazedda`.

## A table {#table}

| Name | Notes |
|---|---|
| **quokkafin**|`numbatte`|
| wallaby<br>dingotron | - |
"""


@pytest.fixture
def compounds(content_copy: Path) -> None:
    (content_copy / "docs" / "en" / "compounds.md").write_text(COMPOUNDS)
    assert "en/compounds" in rebuild(content_copy).rendered


@pytest.mark.usefixtures("compounds")
@pytest.mark.parametrize(
    ("q", "anchor"),
    [
        ("quintessa", "identifiers"),  # word_word
        ("zorblax", "identifiers"),
        ("gronkle", "identifiers"),  # word.word
        ("boojumo", "identifiers"),  # word/word
        ("betazedda", "options"),  # a|b
        ("alpharix", "options"),
        ("numbatte", "table"),  # cells next to each other
        ("dingotron", "table"),  # after a <br> in a cell
        ("zorblax_quintessa", "identifiers"),  # the compound as typed
    ],
)
def test_a_word_inside_a_compound_is_found_on_its_own(q: str, anchor: str) -> None:
    for typed in (q, q + " "):  # while typing (prefix) and finished
        hits = search(typed, lang="en")
        assert [(h.slug, h.anchor) for h in hits[:1]] == [("compounds", anchor)], typed


def test_a_prefix_is_never_cut_to_a_stub_that_matches_other_words() -> None:
    # "bananas" while typing was "ban*": bandwidth. Five letters at least: nothing matches.
    assert search("bananas") == []
    assert search("override")[0].anchor == "binding"  # driver_override, not "over*" (overlay, overhead)


def test_a_query_matching_nothing_says_so_with_suggestions(client: Client) -> None:
    html = client.get("/docs/search/", {"q": "iommmu", "partial": "1"}).content.decode()
    assert "Nothing in the documentation or the labs matches" in html
    assert 'class="kb-hit"' not in html
    assert '<a href="/docs/search/?q=IOMMU">IOMMU</a>' in html
    assert 'href="/docs/glossary/"' in html
    # With a filter on, a way to drop it.
    html = client.get("/docs/search/", {"q": "zzqqxxnotaword", "lang": "zh", "partial": "1"}).content.decode()
    assert "Search every language and section" in html


def test_chinese_query_in_english_interface_finds_both_languages_chinese_first(client: Client) -> None:
    html = client.get("/docs/search/", {"q": "中介设备"}).content.decode()
    assert '<option value="" selected>' in html  # the language filter defaults to both
    langs = [r.lang for r in search("中介设备", limit=20)]
    assert langs[0] == "zh"
    assert "en" in langs
    assert langs == sorted(langs, key=lambda lang: lang != "zh")
    assert html.index('<li class="kb-hit" lang="zh">') < html.index('<li class="kb-hit" lang="en">')


def test_english_query_in_chinese_interface_finds_both_languages_english_first(client: Client) -> None:
    client.cookies["django_language"] = "zh-hans"
    html = client.get("/docs/search/", {"q": "mediated device", "partial": "1"}).content.decode()
    assert html.index('<li class="kb-hit" lang="en">') < html.index('<li class="kb-hit" lang="zh">')
    langs = [r.lang for r in search("mediated device", limit=20)]
    assert langs[0] == "en"
    assert "zh" in langs


def test_a_lab_step_is_found_and_linked_beside_the_docs() -> None:
    for q, lang in (("driver_override vfio-pci bind", "en"), ("绑定 vfio-pci driver_override", "zh")):
        results = search(q, lang=lang)
        kinds = {r.kind for r in results}
        assert kinds == {"doc", "lab"}, q
        lab = next(r for r in results if r.kind == "lab")
        assert lab.slug == "vfio-userspace"
        assert lab.anchor.startswith("step-")
        assert lab.url == f"/labs/vfio-userspace/#{lab.anchor}"
        assert "<mark>" in lab.snippet_html


def test_lab_results_show_a_lab_badge_and_link_the_step(client: Client) -> None:
    html = client.get("/docs/search/", {"q": "driver_override", "lang": "en", "partial": "1"}).content.decode()
    assert 'href="/labs/vfio-userspace/#step-' in html
    assert 'class="badge badge-lab"' in html
