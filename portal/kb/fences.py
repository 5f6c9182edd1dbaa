"""Code fences: Pygments highlighting, the `sh runnable` flag, and the text a copy button copies."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from pygments import highlight
from pygments.formatter import Formatter
from pygments.formatters import HtmlFormatter
from pygments.lexers import TextLexer, get_lexer_by_name
from pygments.util import ClassNotFound

# `# ` (root) and `$ ` prompts start a command; a trailing backslash continues it.
PROMPT_RE = re.compile(r"^(?:[#$]) ")
SESSION_LANGS = {"console", "shell-session"}


@dataclass(frozen=True)
class CodeBlock:
    lang: str
    code: str
    runnable: bool
    copy_text: str


def console_commands(code: str) -> str:
    """The commands of a console transcript, prompts removed, output lines skipped."""
    commands: list[str] = []
    continuing = False
    for line in code.splitlines():
        if continuing:
            commands.append(line)
        elif PROMPT_RE.match(line):
            commands.append(line[2:])
        else:
            continue
        continuing = line.endswith("\\")
    return "\n".join(commands)


def _lexer(lang: str) -> Any:
    try:
        return get_lexer_by_name(lang or "text", stripnl=False)
    except ClassNotFound:
        return TextLexer(stripnl=False)


def render_code(code: str, lang: str, runnable: bool) -> tuple[str, CodeBlock]:
    """HTML for one fenced block plus its description for the caller."""
    lang = (lang or "text").lower()
    copy_text = console_commands(code) if lang in SESSION_LANGS else code.rstrip("\n")
    formatter = HtmlFormatter(cssclass="highlight", wrapcode=True)
    # Focusable: a long line scrolls inside the block, and keyboard users must be able to scroll it.
    body = highlight(code, _lexer(lang), formatter).replace("<pre>", '<pre tabindex="0">', 1)
    attrs = f' data-lang="{html.escape(lang)}" data-copy="{html.escape(copy_text, quote=True)}"'
    if runnable:
        attrs += ' data-runnable="true"'
    classes = "codeblock runnable" if runnable else "codeblock"
    block = CodeBlock(lang=lang, code=code, runnable=runnable, copy_text=copy_text)
    return f'<div class="{classes}"{attrs}>{body}</div>', block


class FenceCollector:
    """superfences custom-fence hooks that remember every block of one render."""

    def __init__(self) -> None:
        self.blocks: list[CodeBlock] = []

    def validate(
        self, language: str, inputs: dict[str, str], options: dict[str, Any], attrs: dict[str, Any], md: Any
    ) -> bool:
        # Only one option exists: the bare word `runnable` after the language.
        if set(inputs) - {"runnable"}:
            return False
        options["runnable"] = "runnable" in inputs
        return True

    def format(self, src: str, language: str, class_name: str, options: dict[str, Any], md: Any, **kwargs: Any) -> str:
        out, block = render_code(src, language, bool(options.get("runnable")))
        self.blocks.append(block)
        return out


def pygments_css(style: str, scope: str) -> str:
    """Stylesheet for highlighted code under the CSS selector `scope`."""
    # Called through the base class: types-Pygments leaves HtmlFormatter's override unannotated.
    formatter: Formatter[str] = HtmlFormatter(style=style)
    return formatter.get_style_defs(scope)
