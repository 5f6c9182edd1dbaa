"""Create the first admin account for `make run` and remember its credentials in var/."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand

from portal import roles


class Command(BaseCommand):
    help = "Create the 'admin' superuser if there is none; store its credentials in var/admin-credentials."

    def handle(self, *args: Any, **options: Any) -> None:
        creds = settings.VAR_DIR / "admin-credentials"
        user = User.objects.filter(username="admin").first()
        if user and creds.exists():
            return
        password = secrets.token_urlsafe(12)
        if user is None:
            user = User.objects.create_superuser("admin", "admin@localhost", password)
        else:
            user.set_password(password)
            user.save()
        for role in roles.ALL_ROLES:
            roles.grant_role(user, role)
        creds.write_text(f"admin / {password}\n")
        creds.chmod(0o600)
        self.stdout.write(f"created admin account; credentials in {creds}")
