from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_safe

from classes import views as class_pages
from portal import health


@require_safe  # HEAD too: monitors and link checkers ask with HEAD
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/home.html")


@require_GET
def classes(request: HttpRequest) -> HttpResponse:
    """/classes/: the classes a visitor teaches or joined, the join form, and (instructors) a new class."""
    return class_pages.index(request)


@never_cache
@require_GET
def healthz_live(request: HttpRequest) -> HttpResponse:
    """Liveness for container healthchecks: this process serves requests; no database or Redis."""
    return HttpResponse("ok\n", content_type="text/plain")


def may_see_health_details(request: HttpRequest) -> bool:
    """Staff, or a monitor sending `Authorization: Bearer <HEALTHZ_TOKEN>` (when one is set)."""
    token = settings.HEALTHZ_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return True
    return bool(request.user.is_active and request.user.is_staff)


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """ok or degraded for anyone; the checks (hosts, URLs, paths, errors) only for staff or the token.
    Served from this process's report, at most HEALTHZ_CACHE_S old: one probe run at a time however many call."""
    report = health.cached_report()
    body: dict[str, object] = {"status": "ok" if report.ok else "degraded"}
    if may_see_health_details(request):
        body["checks"] = [c.as_dict() for c in report.checks]
        body["age_s"] = round(report.age_s, 1)
    return JsonResponse(body, status=200 if report.ok else 503)
