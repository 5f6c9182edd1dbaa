"""The labs this deployment offers (the catalog under settings.CONTENT_DIR/labs), and their steps'
text as HTML for the pages. The catalog itself is plain data; rendering is the web side's job."""

from __future__ import annotations

import functools

from django.conf import settings

from labs.catalog import Catalog, Lab, Step, get_catalog
from labs.catalog.model import content_lang
from portal.kb.markdown import render_markdown


def catalog(*, fresh: bool = False) -> Catalog:
    return get_catalog(settings.CONTENT_DIR / "labs", fresh=fresh)


def get_lab(slug: str) -> Lab | None:
    """The valid lab called `slug`, or None."""
    return catalog().get(slug)


@functools.lru_cache(maxsize=512)
def _render(text: str, lang: str) -> str:
    # Cached: the text only changes with the files, and the same steps are shown again and again.
    return render_markdown(text, lang=lang).html


def instructions_html(step: Step, lang: str) -> str:
    """Sanitized HTML of the step's instructions in `lang`, through the knowledge base's renderer
    (`lab:` and `doc:` links, code blocks and sanitizing exactly as in the docs)."""
    return _render(step.instructions.get(lang), content_lang(lang))


def hints_html(step: Step, lang: str) -> list[str]:
    """Sanitized HTML of each hint in `lang` (hints are Markdown too: `code`, links)."""
    return [_render(hint.get(lang), content_lang(lang)) for hint in step.hints]


def require_lab(slug: str) -> Lab:
    """The lab a session runs. A lab added in the last RECHECK_INTERVAL_S may be known to the web
    process that accepted the start and not yet to this worker: a miss looks at the files again."""
    lab = get_lab(slug) or catalog(fresh=True).get(slug)
    if lab is None:
        raise LookupError(f"no lab {slug!r} is offered")
    return lab
