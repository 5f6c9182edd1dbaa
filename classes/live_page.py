"""The instructor's live grid page (/classes/<id>/live): the grid as of now, then the websocket."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from classes import access, live


@require_GET
@login_required
def live_page(request: HttpRequest, class_id: int) -> HttpResponse:
    klass = access.class_taught_by(request.user, class_id)
    if klass is None:  # not theirs, or no such class: the same answer
        raise Http404("no such class")
    context = {
        "klass": klass,
        "grid": live.grid_json(klass),
        "strings": _strings(),
        "message_max": _message_max(),
    }
    return render(request, "classes/grid.html", context)


def _message_max() -> int:
    return int(settings.CLASSES_MESSAGE_MAX_CHARS)


def _strings() -> dict[str, str]:
    """Texts the grid's script shows, translated here so the script holds none."""
    return {
        "not_started": _("Not started"), "working": _("Working"), "passed": _("Passed"), "failed": _("Failed"),
        "waiting": _("Waiting for a seat"), "no_session": _("No VM yet"),
        "check_one": _("1 check"), "checks_many": _("{n} checks"),
        # "7 learners: <reason>" — the count is filled in by the script.
        "learners_one": _("1 learner"), "learners_many": _("{n} learners"),
        "nobody_stuck": _("No failed checks right now."), "step": _("Step"), "learner": _("Learner"),
        "watch": _("Watch"), "message": _("Message"), "stop_watching": _("Stop watching"),
        "watching": _("Watching {user}'s terminal (read-only)"), "to_class": _("Message to the whole class"),
        "to_learner": _("Message to {user}"), "sent": _("Sent."), "live": _("live"),
        "reconnecting": _("reconnecting…"), "forbidden": _("You no longer teach this class."),
        "observer": _("observing (read-only)"), "connected": _("connected"), "gone": _("The VM is gone."),
        "ws_message_refused": _("The message was not sent."),
        "ws_too_many_sockets": _("Too many open class tabs: close some and this one reconnects."),
        "ws_signed_out": _("Signed out: sign in again."),
        "ws_refresh_rate": _("The grid is already up to date: it was sent a moment ago."),
        "shown": _("{shown} of {total} learners"),
        # Seat actions (the classes API); {n}: how many seats, {step}: the step.
        "selected": _("{n} selected"), "select": _("Select {user}"), "select_all": _("Select every learner shown"),
        "confirm_reset": _("Reset {n} seat(s) to the start of step {step}? What those learners did since is lost."),
        "confirm_extend": _("Give {n} seat(s) more time?"),
        "confirm_reprovision": _("Destroy the VM of {n} seat(s) and give each a new one? Their work is lost."),
        "action_done": _("Done for {done} seat(s)."), "action_skipped": _("Skipped {user}: {why}"),
        "action_failed": _("The action failed"),
    }  # fmt: skip
