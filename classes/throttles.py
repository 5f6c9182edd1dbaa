"""How often an account, and a network, may try invite codes (codes are guessed by trying): the
pages and the API count in the same django-ratelimit buckets (portal.accounts.throttle)."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from portal.accounts import throttle

JOIN_PER_ACCOUNT = throttle.Rate(
    "class-join-account", "CLASSES_JOIN_RATE", "CLASSES_JOIN_RATE_WINDOW_S",
    _("Too many invite codes tried. Check the code with your instructor."),
)  # fmt: skip
JOIN_PER_IP = throttle.Rate(
    "class-join-ip", "CLASSES_JOIN_IP_RATE", "CLASSES_JOIN_RATE_WINDOW_S",
    _("Too many invite codes tried from your network."),
)  # fmt: skip


def join_limit_hit(request: HttpRequest) -> tuple[throttle.Rate, int] | None:
    """Count one join attempt; the rate hit and the seconds to wait, if past one."""
    for rate, key in ((JOIN_PER_ACCOUNT, lambda r: f"user:{r.user.pk}"), (JOIN_PER_IP, "ip")):
        wait = throttle.hit(request, rate, key)
        if wait is not None:
            return rate, wait
    return None
