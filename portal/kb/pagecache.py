"""Whole pages for anonymous readers, rendered once per build and UI language.

Two anonymous requests for the same URL differ only in their CSRF token (the language form in
the header posts), so the rendered HTML is stored with a hole where the token goes and each
response gets its own fresh token punched in. Signed-in users and pending messages bypass this.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.contrib.messages import get_messages
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.template.loader import render_to_string

from . import cache

TOKEN_RE = re.compile(r'(name="csrfmiddlewaretoken" value=")[^"]*(")')
HOLE = "\x00csrf-token\x00"


def render_for_reader(
    request: HttpRequest, template: str, make_context: Callable[[], dict[str, Any]], key: str
) -> HttpResponse:
    if request.user.is_authenticated or len(get_messages(request)):
        return render(request, template, make_context())
    html = cache.fragments.get(key)
    if html is None:
        html = TOKEN_RE.sub(rf"\g<1>{HOLE}\g<2>", render_to_string(template, make_context(), request))
        cache.fragments.set(key, html)
    return HttpResponse(html.replace(HOLE, get_token(request)))
