"""Lab pages: the catalog and one lab (steps, terminal, live session). Actions go through the API."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import get_language
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from labs.models import LabSession
from labs.services.catalog import catalog, get_lab, hints_html, instructions_html
from labs.services.session_events import session_payload
from labs.timeline.models import SessionTimeline


@require_GET
def catalog_page(request: HttpRequest) -> HttpResponse:
    lang = get_language() or "en"
    labs = [
        {"lab": lab, "title": lab.title.get(lang), "summary": lab.summary.get(lang), "steps": len(lab.steps)}
        for lab in catalog().labs.values()
    ]
    return render(request, "labs/catalog.html", {"labs": labs})


@require_GET
def lab_page(request: HttpRequest, slug: str) -> HttpResponse:
    lab = get_lab(slug)
    if lab is None:
        raise Http404("no such lab")
    lang = get_language() or "en"
    steps = [
        {
            "number": step.number,
            "title": step.title.get(lang),
            "html": instructions_html(step, lang),
            "hints": hints_html(step, lang),
            "solution": step.solution,
        }
        for step in lab.steps
    ]
    # The visitor's own running session of this lab (staff observe others' on the websockets, never
    # here), as the DB has it: the same SessionOut the API returns and the events websocket pushes.
    current = LabSession.objects.driven_by(request.user).running().filter(lab_slug=slug).first()
    session = session_payload(current) if current else None
    # The visitor's recorded sessions of this lab, newest first, to replay (labs/timeline/).
    own = LabSession.objects.driven_by(request.user).filter(lab_slug=slug)
    replays = SessionTimeline.objects.filter(session__in=own).defer("cast_gz").order_by("-created_at")[:5]
    context = {
        "lab": lab,
        "title": lab.title.get(lang),
        "summary": lab.summary.get(lang),
        "steps": steps,
        "session": session,
        "strings": _page_strings(),
        "max_frame": settings.LABS_WS_MAX_FRAME_BYTES,  # the terminal refuses a bigger paste itself
        "replays": replays,
    }
    return render(request, "labs/lab.html", context)


def _page_strings() -> dict[str, str]:
    """Texts the page's script shows, translated here so the script holds none."""
    return {
        "checking": _("Checking…"), "passed": _("Passed"), "failed": _("Not yet"), "time_left": _("Time left"),
        "gone": _("The VM is gone."), "connected": _("connected"), "reconnecting": _("reconnecting…"),
        "queued": _("Position in queue"), "boot": _("Booting the VM…"), "warm": _("Taking a pre-booted VM…"),
        "agent": _("Waiting for the guest agent…"), "setup": _("Preparing step 1…"),
        "observer": _("observing (read-only)"), "confirm_stop": _("Stop the lab? Its VM will be destroyed."),
        "confirm_reset": _("Start over from step 1? Your changes in the VM are lost."),
        "confirm_goto": _("Go back to the start of this step? Later progress is lost."),
        "back_to_step": _("Back to this step"), "restart_step": _("Restart this step"),
        "confirm_restart": _("Start this step again from its beginning? What you did since it began is lost."),
        "completed": _("Lab completed. Well done!"), "error": _("Something went wrong"),
        # The websockets' limits (labs/limited_consumer.py): "ws_" + the code of a notice, error or close.
        "resync": _("catching up…"), "ws_signed_out": _("Signed out: sign in again to use this lab."),
        "ws_not_ready": _("The VM is not taking input right now: what you typed was dropped."),
        "ws_read_only": _("You are observing: what you type is not sent."),
        "ws_input_rate": _("Typing too fast: some input was dropped."),
        "ws_input_queue": _("The VM is not reading input: what you typed was dropped."),
        "ws_input_failed": _("Input could not be delivered; try again."),
        "ws_frame_size": _("Too much at once: paste it in smaller parts."),
        "ws_too_many_sockets": _("Too many open lab tabs: close some and this one reconnects."),
    }  # fmt: skip
