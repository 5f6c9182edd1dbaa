"""Hostile content and the check that a page stayed inert: what the XSS and traversal tests share.

Every payload carries MARK, so that what the check finds can be traced to the input (the app's own
scripts never contain it). SECRET is written to files outside the content directory: no page, image
or link may ever serve it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import lxml.html
import pytest
import yaml
from pytest_django import Settings

from tests import lab_stack
from tests.access_matrix import build_content, write_doc

MARK = "xss-7f3a"
SECRET = "secret-outside-content-51c9"
# Evaluated by a template engine, this would read XSS-7F3A; as text it stays lower case.
TEMPLATE_MARK = MARK.upper()
ATTACK = f"alert('{MARK}')"

# One string for one-line fields (titles, form fields, query parameters).
PAYLOADS = [
    f"<script>{ATTACK}</script>",
    f'"><script>{ATTACK}</script>',
    f"'><img src=x onerror={ATTACK}>",
    f'" onmouseover="{ATTACK}" x="',
    f"javascript:{ATTACK}",
    f"</script><script>{ATTACK}</script>",
    f'{{{{ "{MARK}"|upper }}}}{{% debug %}}',
]
LINE = " ".join(PAYLOADS)

# Markdown for doc pages, lab steps and hints: raw HTML, Markdown links and attribute lists, template
# syntax, and references to files outside the content directory.
MARKDOWN = f"""Intro <script>{ATTACK}</script> text with <b onmouseover="{ATTACK}">bold</b>.

<img src="x" onerror="{ATTACK}">

<svg onload="{ATTACK}"><script>{ATTACK}</script></svg>

<iframe src="javascript:{ATTACK}"></iframe> <object data="javascript:{ATTACK}"></object>
<embed src="javascript:{ATTACK}"> <base href="javascript:{ATTACK}//">
<meta http-equiv="refresh" content="0;url=javascript:{ATTACK}">

<a href="javascript:{ATTACK}">raw link</a> [markdown link](javascript:{ATTACK})
[spaced](  JaVaScRiPt:{ATTACK}) <a href="jav&#x09;ascript:{ATTACK}">tab</a>
<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">data {MARK}</a>
[attribute list](https://example.org/){{: onclick="{ATTACK}" }}

<form action="javascript:{ATTACK}"><button formaction="javascript:{ATTACK}">go</button></form>
<style>body {{ background: url("javascript:{ATTACK}") }}</style>
<p style="background: url(javascript:{ATTACK})">styled {MARK}</p>

Template syntax: {{{{ "{MARK}"|upper }}}} {{% debug %}} ${{{{ "{MARK}".toUpperCase() }}}}

## A heading {{: #evil onclick="{ATTACK}" }}

!!! note "<script>{ATTACK}</script>"
    An admonition.

```<script>{ATTACK}</script>
a fence with a hostile info string
```

```sh
echo '<script>{ATTACK}</script>'
```

![up](../../../../secret.svg) ![img-up](img/../../secret.svg) ![abs](/etc/passwd) ![file](file:///etc/passwd)
![dotted](img/secret.v2.svg) ![jpg](img/secret.jpg)
[up](../../secret.txt) [file link](file:///etc/passwd) [doc traversal](doc:..%2f..%2fsecret) [lab](lab:../secret)

--8<-- "../secret.txt"
"""

DOC = "hostile-page"
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "data", "xlink:href", "poster", "background", "srcdoc"}
FOREIGN_TAGS = {"iframe", "frame", "frameset", "object", "embed", "applet", "base"}


def write_secrets(outside: Path) -> None:
    """Files a traversal would reach: next to the content directory, never inside it."""
    outside.mkdir(parents=True, exist_ok=True)
    for name in ("secret.svg", "secret.png", "secret.txt", "passwd"):
        (outside / name).write_text(f"<svg>{SECRET}</svg>" if name.endswith(".svg") else SECRET)


def write_hostile_lab(content_dir: Path) -> str:
    """The test lab (tests/lab_stack.write_test_lab) with hostile text in every field a page shows."""
    slug = lab_stack.write_test_lab(content_dir)
    lab = content_dir / "labs" / slug
    meta = yaml.safe_load((lab / "lab.yaml").read_text())
    meta["title"] = {"en": f"Lab {LINE}", "zh": f"实验 {LINE}"}
    meta["summary"] = {"en": f"Summary {LINE}", "zh": f"摘要 {LINE}"}
    (lab / "lab.yaml").write_text(yaml.safe_dump(meta, allow_unicode=True))
    for step in sorted((lab / "steps").iterdir()):
        data = yaml.safe_load((step / "step.yaml").read_text())
        data["title"] = {"en": f"Step {LINE}", "zh": f"步骤 {LINE}"}
        data["hints"] = {"en": [MARKDOWN], "zh": [MARKDOWN]}
        data["solution"] = [*data["solution"], f"echo '</code></pre>{PAYLOADS[0]}'"]
        data["check"][0]["message"] = {"en": LINE, "zh": LINE}
        (step / "step.yaml").write_text(yaml.safe_dump(data, allow_unicode=True))
        for lang in ("en", "zh"):
            (step / f"{lang}.md").write_text(MARKDOWN)
    return slug


def write_hostile_docs(content_dir: Path, lab_slug: str) -> None:
    """A doc page (both languages) and a glossary entry, hostile throughout, built by the project's
    own build (portal.kb.build.build_docs) into the test database."""
    write_doc(content_dir, DOC, MARKDOWN, title=f"Page {LINE}", summary=f"Summary {LINE}", labs=(lab_slug,))
    glossary = content_dir / "docs" / "glossary"
    glossary.mkdir(parents=True, exist_ok=True)
    entry = {"en": f"term {MARK} <script>{ATTACK}</script>", "zh": [f"术语 {LINE}"], "aliases": [LINE]}
    (glossary / f"{DOC}.yaml").write_text(yaml.safe_dump([entry], allow_unicode=True))
    build_content(content_dir)


@pytest.fixture
def hostile_world(lab_world: str, settings: Settings) -> str:
    """The lab world with hostile text in the test lab, a hostile doc page and glossary entry (built),
    and secret files next to (never inside) the content directory; the lab's slug."""
    write_secrets(settings.CONTENT_DIR.parent)
    slug = write_hostile_lab(settings.CONTENT_DIR)
    write_hostile_docs(settings.CONTENT_DIR, slug)
    return slug


# --- Is this page inert? ----------------------------------------------------------------------------

_IGNORED_IN_SCHEME = re.compile(r"[\x00-\x20]")  # browsers skip these inside a URL's scheme


def dangerous_url(value: str) -> bool:
    squeezed = _IGNORED_IN_SCHEME.sub("", value).lower()
    return squeezed.startswith(("javascript:", "vbscript:", "data:text/html", "file:"))


def executable_markup(html: str) -> list[str]:
    """Everything in the page that a browser would run, or that reaches outside the page, and
    that came from the input: script elements with MARK, any inline event handler (the app has
    none: its Content-Security-Policy allows none), javascript:/data:/file: URLs, frames and
    objects, refresh redirects, styles carrying MARK, JSON script blocks that do not parse, and
    template syntax that was evaluated."""
    found: list[str] = []
    if TEMPLATE_MARK in html:
        found.append(f"template syntax was evaluated: {TEMPLATE_MARK}")
    if not html.strip():
        return found
    root = lxml.html.document_fromstring(html)
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue  # comments, processing instructions
        tag = el.tag.lower().rsplit("}", 1)[-1]
        text = el.text or ""
        if tag == "script":
            if el.get("type") == "application/json":
                try:
                    json.loads(text)
                except ValueError:
                    found.append(f"a JSON script block was broken out of: {text[:120]!r}")
            elif MARK in text or MARK in (el.get("src") or ""):
                found.append(f"script: {text[:120]!r}")
        if tag in FOREIGN_TAGS:
            found.append(f"<{tag}> {dict(el.attrib)}")
        if tag == "meta" and (el.get("http-equiv") or "").lower() == "refresh":
            found.append(f"meta refresh {el.get('content')!r}")
        if tag == "style" and MARK in text:
            found.append(f"style element: {text[:120]!r}")
        for name, value in el.attrib.items():
            name = name.lower()
            if name.startswith("on") or (name in URL_ATTRIBUTES and dangerous_url(value)):
                found.append(f"<{tag} {name}={value[:80]!r}>")
            elif name == "style" and MARK in value:
                found.append(f"<{tag} style={value[:80]!r}>")
    return found


def assert_inert(html: str, where: str) -> None:
    found = executable_markup(html)
    assert found == [], f"{where}: executable markup from the input:\n" + "\n".join(found)


def same_site_links(html: str, page_url: str) -> set[str]:
    """Every href and src of the page that points at this site, resolved against the page's URL."""
    links: set[str] = set()
    for el in lxml.html.document_fromstring(html).iter():
        if not isinstance(el.tag, str):
            continue
        for name in ("href", "src"):
            value = el.get(name)
            if not value or value.startswith("#"):
                continue
            url = urlsplit(urljoin("http://testserver" + page_url, value))
            if url.scheme == "http" and url.netloc == "testserver":
                links.add(url.path + (f"?{url.query}" if url.query else ""))
    return links


def content_of(response: Any) -> bytes:
    """The whole body, streamed (files) or not."""
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)
    return bytes(response.content)
