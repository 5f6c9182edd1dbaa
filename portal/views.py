from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from portal import health


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/home.html")


@require_GET
def classes(request: HttpRequest) -> HttpResponse:
    return render(request, "portal/classes.html")


@never_cache
@require_GET
def healthz_live(request: HttpRequest) -> HttpResponse:
    """Liveness for container healthchecks: this process serves requests; no database or Redis."""
    return HttpResponse("ok\n", content_type="text/plain")


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    checks = health.run_all()
    ok = all(c.ok for c in checks)
    body = {"status": "ok" if ok else "degraded", "checks": [c.as_dict() for c in checks]}
    return JsonResponse(body, status=200 if ok else 503)
