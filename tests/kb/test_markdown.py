"""The shared Markdown renderer: ids, links, code blocks, sanitizing."""

from __future__ import annotations

import re

import pytest

from portal.kb.content import page_files, parse_page
from portal.kb.markdown import render_markdown

from .conftest import CONTENT


def test_anchors_are_identical_across_languages() -> None:
    files = page_files(CONTENT)
    slugs = {slug for _lang, slug in files}
    assert len(slugs) >= 7
    for slug in slugs:
        ids = {}
        for lang in ("en", "zh"):
            src = parse_page(files[(lang, slug)], files[(lang, slug)].read_text(), lang)
            ids[lang] = [h.id for h in render_markdown(src.body, lang=lang).toc]
        assert ids["en"] == ids["zh"], slug
        assert ids["en"], slug


@pytest.mark.parametrize(
    "evil",
    [
        "<script>alert(1)</script>",
        '<img src="x.png" onerror="alert(1)">',
        "[click](javascript:alert(1))",
        '<a href="javascript:alert(1)">x</a>',
        '<p onclick="alert(1)" style="color:red">x</p>',
        '<iframe src="https://example.com"></iframe>',
    ],
)
def test_sanitizer_strips_scripts_handlers_and_javascript_urls(evil: str) -> None:
    html = render_markdown(f"Before\n\n{evil}\n\nAfter", lang="en").html.lower()
    for bad in ("<script", "onerror", "onclick", "javascript:", "<iframe", "style="):
        assert bad not in html
    assert "before" in html
    assert "after" in html


def test_doc_links_point_to_the_same_language_and_lab_links_to_labs() -> None:
    text = "[a](doc:vfio#iommu-groups) [b](doc:mdev) [c](lab:vfio-userspace) [d](lab:ublk#step-3)"
    en = render_markdown(text, lang="en")
    zh = render_markdown(text, lang="zh")
    assert 'href="/docs/en/vfio/#iommu-groups"' in en.html
    assert 'href="/docs/zh/vfio/#iommu-groups"' in zh.html
    assert 'href="/docs/zh/mdev/"' in zh.html
    assert 'href="/labs/vfio-userspace/"' in en.html
    assert 'href="/labs/ublk/#step-3"' in en.html
    assert en.doc_links == [("vfio", "iommu-groups"), ("mdev", "")]


def test_console_copy_text_has_only_commands() -> None:
    text = (
        "```console\n# qemu-img create -f qcow2 \\\n    disk.qcow2 1G\nFormatting 'disk.qcow2'\n$ ls\ndisk.qcow2\n```\n"
    )
    r = render_markdown(text, lang="en")
    (block,) = r.code_blocks
    assert block.lang == "console"
    assert not block.runnable
    assert block.copy_text == "qemu-img create -f qcow2 \\\n    disk.qcow2 1G\nls"
    assert 'data-copy="qemu-img create -f qcow2 \\\n    disk.qcow2 1G\nls"' in r.html
    assert "Formatting" in r.html  # shown, just not copied


def test_runnable_flag_and_highlighting() -> None:
    r = render_markdown("```sh runnable\nset -e\necho hi\n```\n\n```c\nint x;\n```\n", lang="en")
    runnable, c_block = r.code_blocks
    assert runnable.runnable
    assert runnable.lang == "sh"
    assert runnable.code == "set -e\necho hi"
    assert not c_block.runnable
    assert c_block.lang == "c"
    assert r.html.count('data-runnable="true"') == 1
    assert '<span class="kt">int</span>' in r.html  # Pygments classes survive the sanitizer


def test_chinese_line_breaks_do_not_become_spaces() -> None:
    html = render_markdown("内存映射的\uff0c\n内核可以 mmap\n设备。\n\n```text\n第一行\n第二行\n```\n", lang="zh").html
    assert "内存映射的\uff0c内核可以 mmap\n设备。" in html
    assert "第一行\n第二行" in html  # code keeps its lines


def test_headings_tables_admonitions() -> None:
    text = '## IOMMU groups {#iommu-groups}\n\n!!! warning "Careful"\n    body\n\n| a | b |\n|---|---|\n| 1 | 2 |\n'
    r = render_markdown(text, lang="en")
    assert '<h2 id="iommu-groups">IOMMU groups</h2>' in r.html
    assert [(h.level, h.id, h.title) for h in r.toc] == [(2, "iommu-groups", "IOMMU groups")]
    assert 'class="admonition warning"' in r.html
    assert '<table tabindex="0">' in r.html  # focusable: a wide table scrolls sideways
    assert [s.id for s in r.sections] == ["", "iommu-groups"]


def test_every_page_renders_and_its_runnable_blocks_are_found() -> None:
    runnable = 0
    for (lang, _slug), path in page_files(CONTENT).items():
        src = parse_page(path, path.read_text(), lang)
        r = render_markdown(src.body, lang=lang, title=src.title)
        assert r.html
        assert r.sections[0].heading == src.title
        found = sum(b.runnable for b in r.code_blocks)
        # Every fence opened as `sh runnable` in the source is found, none more (the count grows with the pages).
        assert found == len(re.findall(r"^```sh runnable$", src.body, re.MULTILINE)), path
        runnable += found
    assert runnable >= 34
