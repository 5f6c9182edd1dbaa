"""The HTML allowlist for rendered Markdown: only what the renderer produces survives."""

from __future__ import annotations

import nh3
from pygments.token import STANDARD_TYPES

TAGS = {
    "a",
    "abbr",
    "blockquote",
    "br",
    "code",
    "del",
    "details",
    "div",
    "em",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "img",
    "kbd",
    "li",
    "ol",
    "p",
    "pre",
    "span",
    "strong",
    "sub",
    "summary",
    "sup",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "tr",
    "ul",
}
HEADINGS = {"h2", "h3", "h4", "h5", "h6"}
ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "div": {"data-lang", "data-copy", "data-runnable"},
    "th": {"style"},
    "td": {"style"},
    "ol": {"start"},
    "pre": {"tabindex"},  # a code block that scrolls sideways must be reachable by keyboard
    **{h: {"id"} for h in HEADINGS},
}
PYGMENTS_CLASSES = {c for c in STANDARD_TYPES.values() if c} | {"hll"}
CLASSES: dict[str, set[str]] = {
    "div": {"codeblock", "runnable", "highlight", "admonition", "note", "warning", "tip", "danger", "info"},
    "p": {"admonition-title"},
    "a": {"kb-figure"},  # a picture linking to its full-size file (markdown.py)
    "pre": {"highlight"},
    "span": PYGMENTS_CLASSES,
    "code": set(),
}


def sanitize_html(html: str) -> str:
    """Strip everything outside the allowlist: scripts, event handlers, javascript: URLs, styles."""
    return nh3.clean(
        html,
        tags=TAGS,
        attributes=ATTRIBUTES,
        allowed_classes=CLASSES,
        url_schemes={"http", "https", "mailto"},
        filter_style_properties={"text-align"},
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
