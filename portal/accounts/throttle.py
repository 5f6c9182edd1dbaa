"""Throttles on the account pages: who is asking (the client's address behind the proxies we were
told of), how often they may, and the page they get when past it.

Two maintained libraries do the counting, both in the Redis cache that every web worker shares:
django-axes locks a username+IP out after ACCOUNT_LOGIN_FAILURE_LIMIT failed log-ins (settings'
AXES_* name the callables below), and django-ratelimit counts requests per IP, per account and per
e-mail address in fixed windows. Each limit is a pair of settings, read at request time.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _
from django_ratelimit.core import get_usage

from portal.client_address import client_address

log = logging.getLogger(__name__)

View = Callable[..., HttpResponseBase]


def client_ip(request: HttpRequest) -> str:
    """The address a request is counted against (portal.client_address has the rule)."""
    return client_address(request.META.get("REMOTE_ADDR") or "", request.META.get("HTTP_X_FORWARDED_FOR", ""))


@dataclass(frozen=True)
class Rate:
    """At most settings.<count> requests per settings.<window> seconds for one key."""

    group: str
    count: str
    window: str
    message: str | Promise

    def spec(self) -> str:
        return f"{getattr(settings, self.count)}/{getattr(settings, self.window)}s"


LOGIN_PER_IP = Rate(
    "login-ip", "ACCOUNT_LOGIN_IP_RATE", "ACCOUNT_LOGIN_RATE_WINDOW_S",
    _("Too many log-in attempts from your network."),
)  # fmt: skip
LOGIN_PER_ACCOUNT = Rate(
    "login-account", "ACCOUNT_LOGIN_ACCOUNT_RATE", "ACCOUNT_LOGIN_RATE_WINDOW_S",
    _("Too many log-in attempts for this account."),
)  # fmt: skip
SIGNUP_PER_IP = Rate(
    "signup-ip", "ACCOUNT_SIGNUP_IP_RATE", "ACCOUNT_SIGNUP_RATE_WINDOW_S",
    _("Too many new accounts from your network."),
)  # fmt: skip
RESET_PER_IP = Rate(
    "reset-ip", "ACCOUNT_RESET_IP_RATE", "ACCOUNT_MAIL_RATE_WINDOW_S",
    _("Too many password reset requests from your network."),
)  # fmt: skip
MAIL_PER_ADDRESS = Rate(
    "mail-address", "ACCOUNT_MAIL_RATE", "ACCOUNT_MAIL_RATE_WINDOW_S",
    _("Too many e-mails to this address."),
)  # fmt: skip

# A key is "ip" (django-ratelimit's, through client_ip, IPv6 by /64) or a function of the request.
Key = str | Callable[[HttpRequest], str]


def posted_username(request: HttpRequest) -> str:
    return str(request.POST.get("username", "")).strip().lower()[:150]


def hit(request: HttpRequest, rate: Rate, key: Key) -> int | None:
    """Count this request against `rate` for `key`; the seconds to wait if it is past the limit."""
    ratelimit_key: Any = key if isinstance(key, str) else (lambda _group, req: key(req))
    usage = get_usage(request, group=rate.group, key=ratelimit_key, rate=rate.spec(), increment=True)
    if usage is None or not usage["should_limit"]:
        return None
    return max(int(usage["time_left"]), 1)


def too_many_requests(request: HttpRequest, message: str | Promise, wait_s: int) -> HttpResponse:
    """429 in the site's layout: what was hit and how long to wait (also as Retry-After)."""
    context = {"message": message, "minutes": max(math.ceil(wait_s / 60), 1)}
    response = render(request, "registration/too_many_requests.html", context, status=429)
    response["Retry-After"] = str(wait_s)
    return response


def limit_posts(*limits: tuple[Rate, Key]) -> Callable[[View], View]:
    """Refuse a POST with 429 once any of `limits` is past its rate; other methods pass freely."""

    def decorate(view: View) -> View:
        @wraps(view)
        def throttled(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method == "POST":
                for rate, key in limits:
                    wait = hit(request, rate, key)
                    if wait is not None:
                        log.warning("throttle %s: %s past %s from %s", rate.group, request.path, rate.spec(),
                                    client_ip(request))  # fmt: skip
                        return too_many_requests(request, rate.message, wait)
            return view(request, *args, **kwargs)

        return throttled

    return decorate


def mail_allowed(request: HttpRequest, address: str, what: str) -> bool:
    """Whether one more account mail (`what`) may go to `address`. Past the rate the mail is dropped
    silently where the page must not tell whether the address has an account."""
    if hit(request, MAIL_PER_ADDRESS, lambda _req: address.strip().lower()) is None:
        return True
    log.warning("throttle %s: dropped a %s mail past %s", MAIL_PER_ADDRESS.group, what, MAIL_PER_ADDRESS.spec())
    return False


# --- django-axes callables (settings.AXES_*): limits read at request time, lockout in our layout.


def login_failure_limit(request: HttpRequest | None, credentials: dict[str, Any] | None) -> int:
    limit: int = settings.ACCOUNT_LOGIN_FAILURE_LIMIT
    return limit


def login_lockout(request: HttpRequest | None = None) -> timedelta:
    return timedelta(seconds=settings.ACCOUNT_LOGIN_LOCKOUT_S)


def locked_out(request: HttpRequest, *_ignored: Any, **_also_ignored: Any) -> HttpResponse:
    """Axes' lockout response. Every further attempt (even with the right password) restarts the
    wait, so the whole lockout is what is left. (Axes' async middleware passes its arguments in
    another order: only the request is used.)"""
    log.warning("throttle login-lockout: %s past %d failed log-ins from %s", request.path,
                settings.ACCOUNT_LOGIN_FAILURE_LIMIT, client_ip(request))  # fmt: skip
    message = _("Too many failed log-ins for this account from your network.")
    return too_many_requests(request, message, settings.ACCOUNT_LOGIN_LOCKOUT_S)
