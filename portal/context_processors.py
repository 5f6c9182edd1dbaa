from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from portal import roles


def site(request: HttpRequest) -> dict[str, Any]:
    user = request.user
    return {
        "is_instructor": roles.has_role(user, roles.INSTRUCTOR),
        "is_staff_role": roles.has_role(user, roles.STAFF),
    }
