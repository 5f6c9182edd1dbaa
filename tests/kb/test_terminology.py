"""Chinese terminology (content/docs/terminology.yaml): one term per concept in every Chinese text of
the docs, the glossary and the labs, and full-width quotes in Chinese prose. Failures name file:line."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from django.conf import settings

CONTENT = Path(settings.CONTENT_DIR)
TERMINOLOGY = CONTENT / "docs" / "terminology.yaml"

FENCE_RE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE_RE = re.compile(r"`[^`\n]*`")
ADMONITION_RE = re.compile(r'^\s*!!!\s+\w+\s+"[^"]*"\s*$')
LINK_TARGET_RE = re.compile(r"\]\([^)\s]*\)")


@dataclass(frozen=True)
class Banned:
    pattern: re.Pattern[str]
    preferred: str
    reason: str


@dataclass(frozen=True)
class Text:
    """One piece of Chinese text and where it starts."""

    path: Path
    line: int
    text: str
    prose: bool  # quotes are checked only in prose (not in code, front matter or syntax)

    def where(self, offset: int = 0) -> str:
        path = self.path.relative_to(CONTENT.parent) if self.path.is_relative_to(CONTENT) else self.path
        return f"{path}:{self.line + self.text.count(chr(10), 0, offset)}"


def load_banned() -> list[Banned]:
    data = yaml.safe_load(TERMINOLOGY.read_text(encoding="utf-8"))
    banned = []
    for entry in data["terms"]:
        for variant in entry["banned"]:
            banned.append(Banned(re.compile(variant), entry["preferred"], " ".join(entry["reason"].split())))
    return banned


def markdown_texts(path: Path) -> Iterator[Text]:
    """Every line of a Chinese Markdown file; prose unless inside front matter or a code fence."""
    lines = path.read_text(encoding="utf-8").splitlines()
    in_front = bool(lines) and lines[0] == "---"
    in_fence = False
    for number, line in enumerate(lines, 1):
        if in_front:
            yield Text(path, number, line, prose=False)
            if number > 1 and line == "---":
                in_front = False
            continue
        if FENCE_RE.match(line):
            in_fence = not in_fence
            yield Text(path, number, line, prose=False)
            continue
        prose = not in_fence and not ADMONITION_RE.match(line)
        yield Text(path, number, line, prose=prose)


def yaml_zh_texts(path: Path, *, glossary: bool = False) -> Iterator[Text]:
    """The values under every `zh` key of a YAML file (a string or a list of strings), with lines.
    In a glossary only the first term is the one written in prose; later ones are search synonyms."""
    root = yaml.compose(path.read_text(encoding="utf-8"))

    def walk(node: yaml.Node) -> Iterator[Text]:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == "zh":
                    scalars = value.value if isinstance(value, yaml.SequenceNode) else [value]
                    if glossary:
                        scalars = scalars[:1]
                    for scalar in scalars:
                        if isinstance(scalar, yaml.ScalarNode):
                            yield Text(path, scalar.start_mark.line + 1, scalar.value, prose=not glossary)
                else:
                    yield from walk(value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                yield from walk(item)

    if root is not None:
        yield from walk(root)


def chinese_texts() -> Iterator[Text]:
    docs = CONTENT / "docs"
    for path in sorted((docs / "zh").glob("*.md")):
        yield from markdown_texts(path)
    for path in sorted((docs / "glossary").glob("*.yaml")):
        yield from yaml_zh_texts(path, glossary=True)
    labs = CONTENT / "labs"
    for path in sorted(labs.glob("*/steps/*/zh.md")):
        yield from markdown_texts(path)
    for path in sorted([*labs.glob("*/lab.yaml"), *labs.glob("*/steps/*/step.yaml")]):
        yield from yaml_zh_texts(path)


def term_violations(texts: list[Text], banned: list[Banned]) -> list[str]:
    found = []
    for text in texts:
        for rule in banned:
            for m in rule.pattern.finditer(text.text):
                found.append(f"{text.where(m.start())}: “{m.group()}” → “{rule.preferred}”")
    return found


def quote_violations(texts: list[Text]) -> list[str]:
    found = []
    for text in texts:
        if not text.prose:
            continue
        stripped = LINK_TARGET_RE.sub("](", INLINE_CODE_RE.sub(lambda m: " " * len(m.group()), text.text))
        offset = stripped.find('"')
        if offset >= 0:
            found.append(f"{text.where(offset)}: ASCII quote in Chinese prose, write “…”: {text.text.strip()[:80]}")
    return found


@pytest.fixture(scope="module")
def texts() -> list[Text]:
    return list(chinese_texts())


def test_the_list_is_well_formed() -> None:
    data = yaml.safe_load(TERMINOLOGY.read_text(encoding="utf-8"))
    preferred = set()
    for entry in data["terms"]:
        assert set(entry) == {"en", "preferred", "banned", "reason"}, entry
        assert entry["preferred"] not in preferred, f"two entries prefer {entry['preferred']}"
        preferred.add(entry["preferred"])
        for variant in entry["banned"]:
            # A rule that bans its own preferred term could never be satisfied.
            assert not re.search(variant, entry["preferred"]), (entry["preferred"], variant)


def test_the_scan_covers_every_chinese_file(texts: list[Text]) -> None:
    scanned = {text.path for text in texts}
    expected = {
        *(CONTENT / "docs" / "zh").glob("*.md"),
        *(CONTENT / "docs" / "glossary").glob("*.yaml"),
        *(CONTENT / "labs").glob("*/steps/*/zh.md"),
        *(CONTENT / "labs").glob("*/lab.yaml"),
    }
    assert expected <= scanned
    assert len({p for p in scanned if p.name == "step.yaml"}) == len(list((CONTENT / "labs").glob("*/steps/*/")))


def test_one_term_per_concept(texts: list[Text]) -> None:
    banned = load_banned()
    found = term_violations(texts, banned)
    reasons = sorted({f"{rule.preferred}: {rule.reason}" for rule in banned if any(rule.preferred in f for f in found)})
    assert not found, "banned Chinese terms (content/docs/terminology.yaml):\n" + "\n".join([*found, "", *reasons])


def test_full_width_quotes_in_chinese_prose(texts: list[Text]) -> None:
    found = quote_violations(texts)
    assert not found, "\n".join(found)


def test_the_checks_catch_what_they_should(tmp_path: Path) -> None:
    """The scanners find a banned variant and an ASCII quote with the right line, and leave code,
    front matter, admonition titles, real pipes and glossary synonyms alone."""
    page = tmp_path / "p.md"
    page.write_text(
        '---\ntitle: "标题"\n---\n正文\n!!! note "注意"\n这是"引号"。\n```sh\necho "x"  # 后端文件\n```\n'
        'qcow2 的后端文件\n用匿名管道和管道符连接 容器的“管道”\n`a "b"` 与 [链接](doc:x#y)\n',
        encoding="utf-8",
    )
    glossary = tmp_path / "g.yaml"
    glossary.write_text('- {en: "user space", zh: ["用户态", "用户空间"]}\n- {en: x, zh: ["透传"]}\n')
    step = tmp_path / "step.yaml"
    step.write_text('title: {en: t, zh: "组是否可行"}\nhints:\n  zh:\n    - "第一条"\n    - "说\\"好\\""\n')
    texts = [*markdown_texts(page), *yaml_zh_texts(glossary, glossary=True), *yaml_zh_texts(step)]

    def places(found: list[str]) -> list[str]:
        return [Path(v.split(": ", 1)[0]).name for v in found]

    # p.md:8 is inside a fence: its Chinese comment is checked for terms, not for quotes.
    assert places(term_violations(texts, load_banned())) == ["p.md:8", "p.md:10", "p.md:11", "g.yaml:2", "step.yaml:1"]
    assert places(quote_violations(texts)) == ["p.md:6", "step.yaml:5"]
