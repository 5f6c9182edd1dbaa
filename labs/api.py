"""JSON API at /api/ (OpenAPI docs at /api/docs): the same services as the pages, session-auth + CSRF."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.translation import get_language
from ninja import NinjaAPI, Schema
from ninja.errors import HttpError
from ninja.security import django_auth

from labs import services
from labs.models import LabSession
from labs.services.catalog import catalog
from labs.services.session_events import session_payload

api = NinjaAPI(title="VirtLab API", version="1", urls_namespace="api")


class LabOut(Schema):
    slug: str
    title: str
    summary: str
    duration_min: int
    difficulty: str
    profile: str
    steps: int


class StartIn(Schema):
    lab: str


class StepIn(Schema):
    step: int


@api.exception_handler(services.LabError)
def lab_error(request: HttpRequest, exc: services.LabError) -> Any:
    body: dict[str, Any] = {"detail": exc.message}
    if isinstance(exc, services.AlreadyRunning):
        body["session"] = exc.session_id
    return api.create_response(request, body, status=exc.status)


def _owned(request: HttpRequest, session_id: str) -> LabSession:
    """The caller's session; 404 for anyone else's, so ids never reveal that a session exists."""
    session = LabSession.objects.filter(pk=session_id, user_id=request.user.pk or 0).first()
    if session is None:
        raise HttpError(404, "Not found")
    return session


@api.get("/labs", response=list[LabOut], auth=None, tags=["labs"])
def list_labs(request: HttpRequest) -> list[dict[str, Any]]:
    lang = get_language() or "en"
    return [
        {
            "slug": lab.slug, "title": lab.title.get(lang), "summary": lab.summary.get(lang),
            "duration_min": lab.duration_min, "difficulty": lab.difficulty, "profile": lab.profile,
            "steps": len(lab.steps),
        }
        for lab in catalog().labs.values()
    ]  # fmt: skip


@api.post("/sessions", auth=django_auth, tags=["sessions"])
def start(request: HttpRequest, body: StartIn) -> Any:
    session = services.start_lab(request.user, body.lab)  # type: ignore[arg-type]
    return api.create_response(request, session_payload(session), status=201)


@api.get("/sessions/{session_id}", auth=django_auth, tags=["sessions"])
def get_session(request: HttpRequest, session_id: str) -> dict[str, Any]:
    return session_payload(_owned(request, session_id))


@api.post("/sessions/{session_id}/check", auth=django_auth, tags=["sessions"])
def check(request: HttpRequest, session_id: str, body: StepIn) -> Any:
    services.check_step(_owned(request, session_id), body.step)
    return api.create_response(request, {"detail": "checking"}, status=202)


@api.post("/sessions/{session_id}/goto", auth=django_auth, tags=["sessions"])
def goto(request: HttpRequest, session_id: str, body: StepIn) -> Any:
    services.goto_step(_owned(request, session_id), body.step)
    return api.create_response(request, {"detail": "restoring"}, status=202)


@api.post("/sessions/{session_id}/reset", auth=django_auth, tags=["sessions"])
def reset(request: HttpRequest, session_id: str) -> Any:
    services.reset_lab(_owned(request, session_id))
    return api.create_response(request, {"detail": "restoring"}, status=202)


@api.post("/sessions/{session_id}/extend", auth=django_auth, tags=["sessions"])
def extend(request: HttpRequest, session_id: str) -> dict[str, Any]:
    return session_payload(services.extend_lab(_owned(request, session_id)))


@api.post("/sessions/{session_id}/stop", auth=django_auth, tags=["sessions"])
def stop(request: HttpRequest, session_id: str) -> dict[str, Any]:
    session = _owned(request, session_id)
    services.stop_lab(session)
    session.refresh_from_db()
    return session_payload(session)
