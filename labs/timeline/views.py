"""The replay page of a session's timeline, the record it plays, and the learner's download."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from labs.services.catalog import get_lab
from labs.services.errors import LabError
from labs.states import SessionState
from labs.timeline.access import NotRecordedYet, downloadable_timeline, timeline_for
from labs.timeline.models import SessionTimeline

CAST_TYPE = "application/x-asciicast"


def _record(request: HttpRequest, session_id: str, download: bool = False) -> SessionTimeline:
    try:
        return downloadable_timeline(request.user, session_id) if download else timeline_for(request.user, session_id)
    except NotRecordedYet:
        raise
    except LabError as exc:
        raise Http404("no such session") from exc


# asciinema-player's terminal is WebAssembly: compiling it needs 'wasm-unsafe-eval' (not JS eval).
# Added to this page's policy only, as django-csp's csp_update does (its decorator's types take no
# URL arguments).
WASM_POLICY = {"script-src": ["'wasm-unsafe-eval'"]}


@login_required
@require_GET
@never_cache
def replay_page(request: HttpRequest, session_id: str) -> HttpResponse:
    try:
        record = _record(request, session_id)
    except NotRecordedYet as exc:
        return render(request, "labs/replay.html", {"pending": exc.message, "strings": _page_strings()}, status=404)
    session = record.session
    lab = get_lab(session.lab_slug)
    lang = get_language() or "en"
    steps = [{"number": s.number, "title": s.title.get(lang)} for s in lab.steps] if lab else []
    context = {
        "record": record, "session": session, "title": lab.title.get(lang) if lab else session.lab_slug,
        "steps": steps, "may_download": session.user_id == request.user.pk, "strings": _page_strings(),
        "config": {
            "cast": reverse("labs:replay_cast", args=[session.pk]), "steps": steps, "lang": lang,
            "states": {state.value: str(state.label) for state in SessionState},
        },
    }  # fmt: skip
    response = render(request, "labs/replay.html", context)
    response._csp_update = WASM_POLICY  # type: ignore[attr-defined]
    return response


@login_required
@require_GET
@never_cache
def replay_cast(request: HttpRequest, session_id: str) -> HttpResponse:
    """The record the replay page plays (whoever may replay the session)."""
    try:
        record = _record(request, session_id)
    except NotRecordedYet as exc:
        raise Http404("not recorded yet") from exc
    return HttpResponse(record.text(), content_type=f"{CAST_TYPE}; charset=utf-8")


@login_required
@require_GET
@never_cache
def download_cast(request: HttpRequest, session_id: str) -> HttpResponse:
    """The learner's own record as a .cast file (plays in any asciicast v2 player)."""
    try:
        record = _record(request, session_id, download=True)
    except NotRecordedYet as exc:
        raise Http404("not recorded yet") from exc
    response = HttpResponse(record.text(), content_type=f"{CAST_TYPE}; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{record.session.lab_slug}-{record.session_id}.cast"'
    return response


def _page_strings() -> dict[str, str]:
    """Texts the page's script shows, translated here so the script holds none."""
    return {
        "passed": _("passed"), "failed": _("failed"), "revert": _("back to step %(step)s"),
        "step": _("step %(step)s"), "checkpoint": _("checkpoint of step %(step)s"),
        "state": _("session %(state)s"), "cut": _("record cut: size limit reached"),
        "resumed": _("recording resumed (host agent restarted)"),
        "first_failed": _("Step %(step)s first failed"), "no_marks": _("No steps, checks or reverts recorded."),
        "load_failed": _("The record could not be loaded."),
    }  # fmt: skip
