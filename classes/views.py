"""The class pages: the list (/classes/), a class's page (its instructors see the seats and act on
them; a learner sees their own seat), joining by invite code, and the export.

Function views, thin: the rule of who sees what is `teaching_class` / `seat_of` (404 for anyone
else, as for a class that does not exist); the work is in the services, which the API and the
command call the same way. Every instructor action is confirmed on a second page, then logged.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AnonymousUser, User
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from classes import export, lifecycle
from classes.access import class_taught_by, taught_by
from classes.errors import ClassError
from classes.forms import ClassActionForm, ClassForm, CoInstructorForm, InviteForm, JoinForm, SeatActionForm
from classes.joining import find_invite, join, start_seat_session, waiting_position
from classes.models import LabClass, Seat
from classes.progress import class_progress
from classes.provisioning import readiness
from classes.seats import act_on_seats, leave_class
from classes.throttles import join_limit_hit, limit_class_actions
from labs.services.errors import LabError
from portal.accounts import throttle
from portal.roles import INSTRUCTOR, has_role

PENDING_CODE = "classes_pending_code"  # an invite followed before logging in (kept through sign-up)


MAX_ID = 2**31 - 1  # past any id the database holds (and past what SQLite's integers take)


def teaching_class(user: User | AnonymousUser, class_id: int) -> LabClass:
    klass = class_taught_by(user, class_id) if class_id <= MAX_ID else None
    if klass is None:
        raise Http404("no such class")
    return klass


def seat_of(user: User | AnonymousUser, class_id: int) -> Seat | None:
    if not user.is_authenticated or class_id > MAX_ID:
        return None
    return Seat.objects.select_related("klass", "session").filter(klass_id=class_id, user=user).first()


def join_throttled(request: HttpRequest) -> HttpResponse | None:
    """429 once this account or network has tried too many codes."""
    limited = join_limit_hit(request)
    return throttle.too_many_requests(request, limited[0].message, limited[1]) if limited else None


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)  # behind login_required
    return request.user


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    user = request.user
    context: dict[str, Any] = {"join_form": JoinForm(), "pending_code": request.session.get(PENDING_CODE)}
    if user.is_authenticated:
        context["taught"] = taught_by(user).order_by("-starts_at")
        context["seats"] = Seat.objects.filter(user=user).select_related("klass").order_by("-klass__starts_at")
        if has_role(user, INSTRUCTOR):
            context["form"] = ClassForm()
    return render(request, "portal/classes.html", context)


@require_POST
@login_required
@limit_class_actions
def create(request: HttpRequest) -> HttpResponse:
    if not has_role(request.user, INSTRUCTOR):
        raise Http404("not an instructor")
    form = ClassForm(request.POST)
    if form.is_valid():
        try:
            klass = lifecycle.create_class(_user(request), form.spec())
        except LabError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, _("Class created. Share its invite code with your learners."))
            return redirect("classes:detail", class_id=klass.pk)
    context = {"form": form, "join_form": JoinForm(), "taught": taught_by(request.user), "seats": []}
    return render(request, "portal/classes.html", context, status=400)


@require_GET
@login_required
def detail(request: HttpRequest, class_id: int) -> HttpResponse:
    klass = class_taught_by(request.user, class_id) if class_id <= MAX_ID else None
    if klass is not None:
        return render(request, "classes/class_teacher.html", teacher_context(request, klass))
    seat = seat_of(request.user, class_id)
    if seat is None:
        raise Http404("no such class")
    return render(request, "classes/class_learner.html", {"klass": seat.klass, "seat": seat,
                                                          "position": waiting_position(seat)})  # fmt: skip


def teacher_context(request: HttpRequest, klass: LabClass) -> dict[str, Any]:
    progress = class_progress(klass)
    seats = {seat.pk: seat for seat in klass.seat_set.present().select_related("user", "session")}
    rows = [(row, seats[row.seat_id]) for row in progress.seats]
    return {
        "klass": klass, "progress": progress, "rows": rows, "ready": readiness(klass),
        "invites": klass.invites.filter(revoked_at=None).order_by("-created_at"),
        "join_base": request.build_absolute_uri(reverse("classes:join", args=["CODE"])).removesuffix("CODE"),
        "log": klass.actions.select_related("actor").prefetch_related("seats")[:30],
        "is_owner": klass.owner_id == request.user.pk,
        "seat_form": SeatActionForm(klass), "class_form": ClassActionForm(), "invite_form": InviteForm(),
        "co_form": CoInstructorForm(), "steps": range(1, progress.steps + 1),
        "co_instructors": klass.co_instructors.all(),
        "has_next_lab": klass.current_lab + 1 < len(klass.labs),
        "seated": sum(not row.waiting for row in progress.seats), "waiting": sum(row.waiting for row in progress.seats),
    }  # fmt: skip


@require_http_methods(["GET", "POST"])
@login_required
@limit_class_actions
def edit(request: HttpRequest, class_id: int) -> HttpResponse:
    klass = teaching_class(request.user, class_id)
    form = ClassForm.for_class(klass, request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            lifecycle.update_class(_user(request), klass, form.spec())
        except LabError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, _("Class saved."))
            return redirect("classes:detail", class_id=klass.pk)
    return render(request, "classes/edit.html", {"klass": klass, "form": form}, status=400 if form.errors else 200)


def confirm_page(request: HttpRequest, klass: LabClass, what: str, fields: dict[str, Any], url: str) -> HttpResponse:
    """The confirmation every instructor action goes through: what will happen, and a button."""
    return render(request, "classes/confirm.html", {"klass": klass, "what": what, "fields": fields, "url": url})


@require_POST
@login_required
@limit_class_actions
def seat_action(request: HttpRequest, class_id: int) -> HttpResponse:
    klass = teaching_class(request.user, class_id)
    form = SeatActionForm(klass, request.POST)
    if not form.is_valid():
        messages.error(request, _("Choose the seats and the action (and the step for a reset)."))
        return redirect("classes:detail", class_id=klass.pk)
    data = form.cleaned_data
    if not data["confirm"]:
        names = ", ".join(label for pk, label in form.fields["seats"].choices if pk in data["seats"])  # type: ignore[attr-defined]
        what = dict(form.fields["action"].choices)[data["action"]]  # type: ignore[attr-defined]
        if data["action"] == "reset":
            what = _("Reset to step %(step)s") % {"step": data.get("step") or 1}
        fields = {"action": data["action"], "seats": data["seats"], "step": data.get("step") or 1}
        return confirm_page(request, klass, f"{what}: {names}", fields, reverse("classes:seat_action", args=[klass.pk]))
    try:
        report = act_on_seats(_user(request), klass, data["seats"], data["action"], data.get("step") or 1)
    except LabError as exc:
        messages.error(request, exc.message)
    else:
        if report.done:
            messages.success(request, _("Done for %(n)d seats.") % {"n": len(report.done)})
        for seat_id, why in report.skipped.items():
            messages.warning(request, _("Seat %(seat)s skipped: %(why)s") % {"seat": seat_id, "why": why})
    return redirect("classes:detail", class_id=klass.pk)


@require_POST
@login_required
@limit_class_actions
def class_action(request: HttpRequest, class_id: int) -> HttpResponse:
    klass = teaching_class(request.user, class_id)
    form = ClassActionForm(request.POST)
    if not form.is_valid() or (form.cleaned_data["action"] == "add_seats" and not form.cleaned_data.get("count")):
        messages.error(request, _("Choose an action (and how many seats to add)."))
        return redirect("classes:detail", class_id=klass.pk)
    action, count = form.cleaned_data["action"], form.cleaned_data.get("count")
    if not form.cleaned_data["confirm"]:
        what = str(dict(form.fields["action"].choices)[action])  # type: ignore[attr-defined]
        if action == "add_seats":
            what = _("Add %(n)d seats") % {"n": count}
        return confirm_page(request, klass, what, {"action": action, "count": count or ""},
                            reverse("classes:class_action", args=[klass.pk]))  # fmt: skip
    try:
        lifecycle.class_action(_user(request), klass, action, count)
    except LabError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, _("Done."))
    return redirect("classes:detail", class_id=klass.pk)


@require_POST
@login_required
@limit_class_actions
def invites(request: HttpRequest, class_id: int) -> HttpResponse:
    klass = teaching_class(request.user, class_id)
    form = InviteForm(request.POST)
    if form.is_valid():
        hours = form.cleaned_data.get("expires_in_hours")
        try:
            lifecycle.new_invite(_user(request), klass, timezone.now() + timedelta(hours=hours) if hours else None)
        except LabError as exc:
            messages.error(request, exc.message)
    return redirect("classes:detail", class_id=klass.pk)


@require_POST
@login_required
@limit_class_actions
def revoke_invite(request: HttpRequest, class_id: int, code: str) -> HttpResponse:
    klass = teaching_class(request.user, class_id)
    try:
        lifecycle.revoke_invite(_user(request), klass, code)
    except LabError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, _("Invite %(code)s revoked: it no longer lets anyone join.") % {"code": code})
    return redirect("classes:detail", class_id=klass.pk)


@require_POST
@login_required
@limit_class_actions
def co_instructors(request: HttpRequest, class_id: int) -> HttpResponse:
    klass = teaching_class(request.user, class_id)
    try:
        if "remove" in request.POST:
            lifecycle.remove_co_instructor(_user(request), klass, int(request.POST.get("remove", "0") or 0))
            messages.success(request, _("Co-instructor removed."))
        else:
            form = CoInstructorForm(request.POST)
            if not form.is_valid():
                raise ClassError(_("Give a username or an e-mail address."))
            added = lifecycle.add_co_instructor(_user(request), klass, form.cleaned_data["name"])
            messages.success(request, _("%(name)s is now a co-instructor.") % {"name": added.get_username()})
    except (LabError, ValueError) as exc:
        messages.error(request, exc.message if isinstance(exc, LabError) else _("Unknown co-instructor."))
    return redirect("classes:detail", class_id=klass.pk)


@require_GET
@login_required
def export_csv(request: HttpRequest, class_id: int) -> HttpResponse:
    klass = teaching_class(request.user, class_id)
    response = HttpResponse(export.as_csv(klass), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{export.filename(klass, "csv")}"'
    return response


@require_GET
@login_required
def export_json(request: HttpRequest, class_id: int) -> HttpResponse:
    klass = teaching_class(request.user, class_id)
    response = JsonResponse(export.as_json(klass), json_dumps_params={"ensure_ascii": False})
    response["Content-Disposition"] = f'attachment; filename="{export.filename(klass, "json")}"'
    return response


@require_POST
def join_with_code(request: HttpRequest) -> HttpResponse:
    """The form on /classes/: on to the invite's page (which checks the code)."""
    form = JoinForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Type the invite code your instructor gave you."))
        return redirect("classes")
    return redirect("classes:join", code=form.cleaned_data["code"].strip()[:32])


@require_http_methods(["GET", "POST"])
def join_page(request: HttpRequest, code: str) -> HttpResponse:
    """An invite link: log in or sign up first (the code is kept), then one button joins."""
    code = code[:32]
    if not request.user.is_authenticated:
        request.session[PENDING_CODE] = code
        return render(request, "classes/join.html", {"code": code, "login_next": request.path})
    limited = join_throttled(request)
    if limited is not None:
        return limited
    try:
        invite = find_invite(code)
    except LabError as exc:
        request.session.pop(PENDING_CODE, None)
        return render(request, "classes/join.html", {"code": code, "error": exc.message}, status=exc.status)
    if request.method == "GET":
        return render(request, "classes/join.html", {"code": code, "klass": invite.klass,
                                                     "seat": seat_of(request.user, invite.klass_id)})  # fmt: skip
    request.session.pop(PENDING_CODE, None)
    try:
        seat = join(_user(request), code)
    except LabError as exc:
        return render(request, "classes/join.html", {"code": code, "klass": invite.klass, "error": exc.message},
                      status=exc.status)  # fmt: skip
    return open_seat_and_go(request, seat)


def open_seat_and_go(request: HttpRequest, seat: Seat) -> HttpResponse:
    """Start (or find) the seat's session and go to its lab page; else the class page says why."""
    if seat.waiting:
        messages.warning(request, _("This class is full: you are number %(n)d in line for a seat.")
                         % {"n": waiting_position(seat)})  # fmt: skip
        return redirect("classes:detail", class_id=seat.klass_id)
    try:
        session = start_seat_session(seat)
    except LabError as exc:
        messages.info(request, exc.message)
        return redirect("classes:detail", class_id=seat.klass_id)
    return redirect("labs:detail", slug=session.lab_slug)


@require_POST
@login_required
@limit_class_actions
def open_seat(request: HttpRequest, class_id: int) -> HttpResponse:
    seat = seat_of(request.user, class_id)
    if seat is None:
        raise Http404("no such class")
    return open_seat_and_go(request, seat)


@require_POST
@login_required
@limit_class_actions
def leave(request: HttpRequest, class_id: int) -> HttpResponse:
    """A learner leaves the class themselves, once confirmed; they may join again with the code."""
    seat = seat_of(request.user, class_id)
    if seat is None or seat.left_at is not None:
        raise Http404("no such class")
    if not request.POST.get("confirm"):
        what = _("Leave this class? Your lab's VM is destroyed and your seat goes to the next learner in line. "
                 "Your results stay with your instructor, and you can join again with the invite code.")  # fmt: skip
        return confirm_page(request, seat.klass, what, {}, reverse("classes:leave", args=[class_id]))
    try:
        leave_class(seat)
    except LabError as exc:
        messages.error(request, exc.message)
        return redirect("classes:detail", class_id=class_id)
    messages.success(request, _("You left %(title)s.") % {"title": seat.klass.title})
    return redirect("classes")
