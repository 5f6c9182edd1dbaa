"""Step instructions → HTML through the knowledge base's one Markdown renderer.

Imported lazily: the catalog itself stays Django-free (the host agent loads it), while the
renderer resolves doc:/lab: links with Django's URL resolver.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=512)
def render_instructions(text: str, lang: str) -> str:
    """Sanitized HTML for one step's Markdown; cached because the text only changes with the files."""
    from portal.kb.markdown import render_markdown

    return render_markdown(text, lang=lang).html
