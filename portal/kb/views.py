"""Knowledge-base pages. The request path reads prepared rows (cached per build), never Markdown."""

from __future__ import annotations

from typing import Any

from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.http import require_safe

from . import cache, navigation, pagecache
from .content import LANGS, SECTIONS, docs_dir
from .search import search as run_search
from .search import suggestions


def doc_lang_for(request: HttpRequest) -> str:
    """The docs language matching the UI language (zh-hans → zh)."""
    return "zh" if (get_language() or "").startswith("zh") else "en"


@require_safe
def index(request: HttpRequest) -> HttpResponse:
    corpus = cache.corpus()
    ui = doc_lang_for(request)
    return render(
        request,
        "kb/index.html",
        {
            "sections": navigation.sections_for_index(corpus, ui),
            "doc_lang": ui,
            "section_choices": navigation.section_choices(),
        },
    )


@require_safe
def page(request: HttpRequest, lang: str, slug: str) -> HttpResponse:
    corpus = cache.corpus()
    other = "zh" if lang == "en" else "en"
    shown = lang if (lang, slug) in corpus.pages else other if (other, slug) in corpus.pages else None
    if shown is None:
        raise Http404(_("No such documentation page."))
    ui = get_language() or "en"

    def make_context() -> dict[str, Any]:
        key = f"page:{corpus.build_hash}:{ui}:{lang}:{slug}"
        fragment = cache.fragments.get(key)
        if fragment is None:
            fragment = render_to_string("kb/_page_body.html", navigation.page_context(corpus, shown, slug, lang))
            cache.fragments.set(key, fragment)
        return {"fragment": fragment, "info": corpus.pages[(shown, slug)], "doc_lang": shown}

    key = f"html:{corpus.build_hash}:{ui}:{request.get_full_path()}"
    return pagecache.render_for_reader(request, "kb/page.html", make_context, key)


@require_safe
def page_redirect(request: HttpRequest, slug: str) -> HttpResponse:
    corpus = cache.corpus()
    if not any((lang, slug) in corpus.pages for lang in LANGS):
        raise Http404(_("No such documentation page."))
    return redirect("kb:page", lang=doc_lang_for(request), slug=slug)


@require_safe
def search(request: HttpRequest) -> HttpResponse:
    q = request.GET.get("q", "").strip()[:200]
    lang = request.GET.get("lang", "")  # "" means both: the query's language comes first
    section = request.GET.get("section", "")
    if lang not in ("", *LANGS):
        return HttpResponseBadRequest(_("Unknown language: choose en, zh or leave it empty for both."))
    if section not in ("", *SECTIONS):
        return HttpResponseBadRequest(_("Unknown section: choose one of %s.") % ", ".join(SECTIONS))
    results = run_search(q, lang=lang or None, section=section or None, limit=20) if q else []
    context = {
        "q": q,
        "suggestions": suggestions(q) if q and not results else [],
        "filtered": bool(lang or section),
        "lang": lang,
        "section": section,
        "results": results,
        "section_choices": navigation.section_choices(),
    }
    partial = request.headers.get("HX-Request") == "true" or request.GET.get("partial") == "1"
    return render(request, "kb/_results.html" if partial else "kb/search.html", context)


@require_safe
def glossary(request: HttpRequest) -> HttpResponse:
    corpus = cache.corpus()
    ui = doc_lang_for(request)
    entries = []
    for entry in sorted(corpus.glossary_entries, key=lambda e: e["en"].lower()):
        page = corpus.pages.get((ui, entry["source"])) or corpus.pages.get(("en", entry["source"]))
        entries.append({**entry, "page": page})
    return render(request, "kb/glossary.html", {"entries": entries, "doc_lang": ui})


@require_safe
def image(request: HttpRequest, name: str) -> FileResponse:
    # `name` is constrained by the URL pattern to [\w-]+.(svg|png): no path separators. A symlink
    # may still lead out of docs/img: only what really lies there is served.
    folder = (docs_dir() / "img").resolve()
    path = (folder / name).resolve()
    if path.parent != folder or not path.is_file():
        raise Http404(_("No such image."))
    response = FileResponse(path.open("rb"))
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return response
