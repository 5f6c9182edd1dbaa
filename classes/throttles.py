"""How often an account, and a network, may try invite codes (codes are guessed by trying), and how
often an account may change a class (seat and class actions, invites, co-instructors, leaving):
the pages and the API count in the same django-ratelimit buckets (portal.accounts.throttle)."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from labs.services.errors import RateLimited
from portal.accounts import throttle

JOIN_PER_ACCOUNT = throttle.Rate(
    "class-join-account", "CLASSES_JOIN_RATE", "CLASSES_JOIN_RATE_WINDOW_S",
    _("Too many invite codes tried. Check the code with your instructor."),
)  # fmt: skip
ACTIONS_PER_ACCOUNT = throttle.Rate(
    "class-action-account", "CLASSES_ACTION_RATE", "CLASSES_ACTION_RATE_WINDOW_S",
    _("Too many class actions in a short time. Wait a moment, then try again."),
)  # fmt: skip
JOIN_PER_IP = throttle.Rate(
    "class-join-ip", "CLASSES_JOIN_IP_RATE", "CLASSES_JOIN_RATE_WINDOW_S",
    _("Too many invite codes tried from your network."),
)  # fmt: skip


def per_account(request: HttpRequest) -> str:
    return f"user:{request.user.pk}"


def join_limit_hit(request: HttpRequest) -> tuple[throttle.Rate, int] | None:
    """Count one join attempt; the rate hit and the seconds to wait, if past one."""
    for rate, key in ((JOIN_PER_ACCOUNT, per_account), (JOIN_PER_IP, "ip")):
        wait = throttle.hit(request, rate, key)
        if wait is not None:
            return rate, wait
    return None


# The pages' state-changing views (behind login_required): a POST past the rate gets the 429 page.
limit_class_actions = throttle.limit_posts((ACTIONS_PER_ACCOUNT, per_account))


def check_action_rate(request: HttpRequest) -> None:
    """The API's state-changing operations: count one; RateLimited (429, its message) when past the rate."""
    wait = throttle.hit(request, ACTIONS_PER_ACCOUNT, per_account)
    if wait is not None:
        raise RateLimited(str(ACTIONS_PER_ACCOUNT.message))
