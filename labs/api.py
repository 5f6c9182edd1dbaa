"""JSON API at /api/ (OpenAPI docs at /api/docs): the same services as the pages, session-auth + CSRF."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.translation import get_language
from ninja import NinjaAPI, Schema, Status
from ninja.security import django_auth
from pydantic import StrictInt

from labs import services
from labs.schemas import AlreadyRunningOut, DetailOut, SessionOut, ValidationErrorOut
from labs.services import access
from labs.services.catalog import catalog
from labs.services.session_events import session_out
from labs.timeline.api import router as timeline_router
from labs.types import AuthenticatedRequest

# Every endpoint needs a logged-in user (session cookie + CSRF) unless it says `auth=None`.
api = NinjaAPI(title="VirtLab API", version="1", urls_namespace="api", auth=django_auth)


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
    step: StrictInt  # a JSON integer: not true (which pydantic would otherwise take for 1), "1" or 1.0


# The refusals a session endpoint may answer with (401 comes from `django_auth`): 404 for a session
# the caller may not see (as for one that does not exist), 403 for one they observe but may not drive.
SEE_ERRORS: dict[int, type[Schema]] = {401: DetailOut, 404: DetailOut}
DRIVE_ERRORS: dict[int, type[Schema]] = {**SEE_ERRORS, 403: DetailOut}
# What django-ninja answers before an endpoint runs: 400 for a body that is not JSON, 422 for one
# that does not match its schema. (A POST without the CSRF token is a 403, as DRIVE_ERRORS has.)
BODY_ERRORS: dict[int, type[Schema]] = {400: DetailOut, 422: ValidationErrorOut}
# Starting: not logged in (401), no CSRF token (403), no such lab (404), a bad body.
START_ERRORS: dict[int, type[Schema]] = {401: DetailOut, 403: DetailOut, 404: DetailOut, **BODY_ERRORS}
# An action the host carries out later (its outcome arrives as a session event), or 409 when the
# session is not in a state that allows it.
QUEUED_ACTION: dict[int, type[Schema]] = {202: DetailOut, 409: DetailOut, **DRIVE_ERRORS}


api.add_router("", timeline_router)


@api.exception_handler(services.LabError)
def lab_error(request: HttpRequest, exc: services.LabError) -> HttpResponse:
    body: DetailOut = DetailOut(detail=exc.message)
    if isinstance(exc, services.AlreadyRunning):
        body = AlreadyRunningOut(detail=exc.message, session=exc.session_id)
    return api.create_response(request, body.model_dump(), status=exc.status)


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


@api.post(
    "/sessions",
    tags=["sessions"],
    response={201: SessionOut, 409: AlreadyRunningOut, 429: DetailOut, 503: DetailOut, **START_ERRORS},
)
def start(request: AuthenticatedRequest, body: StartIn) -> Status[SessionOut]:
    return Status(201, session_out(services.start_lab(request.user, body.lab)))


# Staff may read any session, as they may watch its events websocket; only the owner acts on it.
@api.get("/sessions/{session_id}", tags=["sessions"], response={200: SessionOut, **SEE_ERRORS})
def get_session(request: AuthenticatedRequest, session_id: str) -> SessionOut:
    session, _may_drive = access.session_for_user(request.user, session_id)
    return session_out(session)


# 429: a check of this session is still running, or the learner is over their check rate.
@api.post("/sessions/{session_id}/check", tags=["sessions"], response={**QUEUED_ACTION, **BODY_ERRORS, 429: DetailOut})
def check(request: AuthenticatedRequest, session_id: str, body: StepIn) -> Status[DetailOut]:
    services.check_step(access.driven_session_for_user(request.user, session_id), body.step)
    return Status(202, DetailOut(detail="checking"))


@api.post("/sessions/{session_id}/goto", tags=["sessions"], response={**QUEUED_ACTION, **BODY_ERRORS})
def goto(request: AuthenticatedRequest, session_id: str, body: StepIn) -> Status[DetailOut]:
    services.goto_step(access.driven_session_for_user(request.user, session_id), body.step)
    return Status(202, DetailOut(detail="restoring"))


@api.post("/sessions/{session_id}/reset", tags=["sessions"], response=QUEUED_ACTION)
def reset(request: AuthenticatedRequest, session_id: str) -> Status[DetailOut]:
    services.reset_lab(access.driven_session_for_user(request.user, session_id))
    return Status(202, DetailOut(detail="restoring"))


@api.post(
    "/sessions/{session_id}/extend", tags=["sessions"], response={200: SessionOut, 409: DetailOut, **DRIVE_ERRORS}
)
def extend(request: AuthenticatedRequest, session_id: str) -> SessionOut:
    return session_out(services.extend_lab(access.driven_session_for_user(request.user, session_id)))


@api.post("/sessions/{session_id}/stop", tags=["sessions"], response={200: SessionOut, **DRIVE_ERRORS})
def stop(request: AuthenticatedRequest, session_id: str) -> SessionOut:
    session = access.driven_session_for_user(request.user, session_id)
    services.stop_lab(session)
    session.refresh_from_db()
    return session_out(session)
