"""Whole pages for anonymous readers, rendered once per build and UI language.

Two anonymous requests for the same URL differ only in their CSRF token (the language form in
the header posts) and in the form's `next` field (the URL asked for, query string included), so
the rendered HTML is stored with holes where those go and each response gets its own punched in.
Signed-in users and pending messages bypass this.

A cached page reads no query parameter, so none enters its key: `?x=1` … `?x=5000` are one entry,
not 5000 (anyone could otherwise fill the cache and evict the real pages).
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
from django.utils.html import escape

from . import cache

TOKEN_RE = re.compile(r'(name="csrfmiddlewaretoken" value=")[^"]*(")')
NEXT_RE = re.compile(r'(name="next" type="hidden" value=")[^"]*(")')  # base.html's language form
HOLE = "\x00csrf-token\x00"
NEXT_HOLE = "\x00next-url\x00"


def page_key(key: str) -> str:
    """`key` without a query string: callers name the page by its URL, which may carry one."""
    return key.partition("?")[0]


def render_for_reader(
    request: HttpRequest, template: str, make_context: Callable[[], dict[str, Any]], key: str
) -> HttpResponse:
    if request.user.is_authenticated or len(get_messages(request)):
        return render(request, template, make_context())
    key = page_key(key)
    html = cache.fragments.get(key)
    if html is None:
        html = render_to_string(template, make_context(), request)
        html = NEXT_RE.sub(rf"\g<1>{NEXT_HOLE}\g<2>", TOKEN_RE.sub(rf"\g<1>{HOLE}\g<2>", html))
        cache.fragments.set(key, html)
    # The reader's own token, then what the template would have written as `next` (the URL asked for,
    # escaped as autoescape does) last, so nothing in the reader's URL is ever read as a hole.
    html = html.replace(HOLE, get_token(request)).replace(NEXT_HOLE, escape(request.get_full_path()))
    return HttpResponse(html)
