"""The portal's own rows: the e-mail address a new account must prove before its first lab."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class EmailAddress(models.Model):
    """The address a sign-up gave while ACCOUNT_EMAIL_VERIFICATION was on, and when it was proven.

    Only sign-up creates one: an account without a row (made by staff, a command such as
    ensure_admin, or before verification existed) counts as verified.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="email_address")
    email = models.EmailField()
    created_at = models.DateTimeField(auto_now_add=True)
    verified_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.email} ({'verified' if self.verified_at else 'unverified'})"
