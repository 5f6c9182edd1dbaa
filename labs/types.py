"""Types for the type checker only."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest


class AuthenticatedRequest(HttpRequest):
    """A request that passed a login check (`django_auth`, `login_required`): its user is a `User`.

    Nothing creates one: Django hands views a plain HttpRequest. Annotating a view's request with
    this only tells mypy what the login check already guarantees.
    """

    user: User
