"""E-mail verification before a first lab (settings.ACCOUNT_EMAIL_VERIFICATION).

A sign-up records its address unverified and mails a signed link (django.core.signing, valid for
ACCOUNT_VERIFICATION_MAX_AGE_S). Addresses are unique among verified accounts only, so sign-up never
says that an address is taken: when another account already owns it, that owner gets a notice
instead of a link, and the visitor sees the same page either way. The lab start path asks
`is_verified(user)` and refuses with UNVERIFIED_MESSAGE.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import smtplib

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.core import signing
from django.core.mail import send_mail
from django.db.models import Q
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.accounts import throttle
from portal.models import EmailAddress

log = logging.getLogger(__name__)

SALT = "portal.accounts.verify-email"
UNVERIFIED_MESSAGE = _(
    "Verify your e-mail address before your first lab: follow the link we sent you, "
    "or ask for a new one on your profile page."
)


class Outcome(enum.Enum):
    VERIFIED = "verified"
    EXPIRED = "expired"
    INVALID = "invalid"
    TAKEN = "taken"  # another account proved this address first


def required() -> bool:
    enabled: bool = settings.ACCOUNT_EMAIL_VERIFICATION
    return enabled


def is_verified(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Whether `user` may start a lab as far as e-mail goes: always while verification is off; an
    account with no address row (staff-made, ensure_admin, older than verification) counts as verified."""
    if not required():
        return True
    if not user.is_authenticated:
        return False
    address = EmailAddress.objects.filter(user_id=user.pk).only("verified_at").first()
    return address is None or address.verified_at is not None


def pending_address(user: AbstractBaseUser | AnonymousUser) -> EmailAddress | None:
    """The unverified address `user` still has to prove, if verification is on and there is one."""
    if not required() or not user.is_authenticated:
        return None
    return EmailAddress.objects.filter(user_id=user.pk, verified_at__isnull=True).first()


def on_signup(request: HttpRequest, user: User) -> None:
    """Right after sign-up created `user`: with verification on, record the address and mail it."""
    if not required():
        return
    address = EmailAddress.objects.create(user=user, email=user.email)
    send(request, address)


def send(request: HttpRequest, address: EmailAddress) -> bool:
    """Mail `address` its verification link, or, when another account owns it already, a notice to
    that owner. False when the mail was not sent (the address's mail rate, or the mail server)."""
    owner = _verified_owner(address)
    what = "sign-up notice" if owner else "verification"
    if not throttle.mail_allowed(request, address.email, what):
        return False
    if owner is not None:
        context = {"owner": owner, "new_username": address.user.get_username(),
                   "login_url": request.build_absolute_uri(reverse("login")),
                   "reset_url": request.build_absolute_uri(reverse("password_reset"))}  # fmt: skip
        return _mail(address.email, "registration/signup_notice", context)
    link = request.build_absolute_uri(reverse("verify_email", args=[make_token(address)]))
    context = {"username": address.user.get_username(), "link": link,
               "days": max(settings.ACCOUNT_VERIFICATION_MAX_AGE_S // 86400, 1)}  # fmt: skip
    return _mail(address.email, "registration/verify_email", context)


def make_token(address: EmailAddress) -> str:
    # The address is bound by a digest, so a link names no address in logs and dies if it changes.
    return signing.dumps([address.pk, _digest(address.email)], salt=SALT)


def confirm(token: str) -> Outcome:
    """Verify the address a link was made for; a second click on a good link is still VERIFIED."""
    try:
        pk, digest = signing.loads(token, salt=SALT, max_age=settings.ACCOUNT_VERIFICATION_MAX_AGE_S)
    except signing.SignatureExpired:
        return Outcome.EXPIRED
    except (signing.BadSignature, TypeError, ValueError):
        return Outcome.INVALID
    address = EmailAddress.objects.filter(pk=pk).select_related("user").first()
    if address is None or digest != _digest(address.email):
        return Outcome.INVALID
    if address.verified_at is not None:
        return Outcome.VERIFIED
    if _verified_owner(address) is not None:
        return Outcome.TAKEN
    EmailAddress.objects.filter(pk=address.pk, verified_at__isnull=True).update(verified_at=timezone.now())
    log.info("verified the e-mail address of user %s", address.user_id)
    return Outcome.VERIFIED


def _verified_owner(address: EmailAddress) -> User | None:
    """Another active account whose e-mail is this address and counts as verified."""
    others = User.objects.filter(email__iexact=address.email, is_active=True).exclude(pk=address.user_id)
    return others.filter(Q(email_address__isnull=True) | Q(email_address__verified_at__isnull=False)).first()


def _digest(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:20]


def _mail(to: str, template: str, context: dict[str, object]) -> bool:
    subject = render_to_string(f"{template}_subject.txt", context).strip()
    body = render_to_string(f"{template}_email.txt", context)
    try:
        send_mail(subject, body, None, [to])
    except (smtplib.SMTPException, OSError) as exc:
        log.error("could not send %s mail: %s", template, exc)
        return False
    return True
