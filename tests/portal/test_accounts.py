from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group, User
from django.core import mail
from django.test import Client
from django.urls import reverse

from portal import roles
from tests.conftest import PASSWORD

# Sign-ups and resets are throttled in Redis: count them in a private one, from zero each test.
from tests.portal.test_throttle import fresh_throttle_counts, throttle_redis  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def test_signup_creates_an_account_with_no_role_and_logs_in(client: Client) -> None:
    resp = client.post(
        reverse("signup"),
        {"username": "carol", "email": "Carol@Example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert resp.status_code == 302
    user = User.objects.get(username="carol")
    assert user.email == "carol@example.com"
    assert not user.groups.exists()  # every account is a learner; instructor is granted, not signed up for
    assert client.get(reverse("profile")).status_code == 200


def test_signup_rejects_duplicate_email_and_keeps_the_input(client: Client, alice: User) -> None:
    resp = client.post(
        reverse("signup"),
        {"username": "carol", "email": "ALICE@example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert resp.status_code == 200
    assert "already exists" in resp.content.decode()
    assert 'value="carol"' in resp.content.decode()
    assert not User.objects.filter(username="carol").exists()


def test_login_and_logout(client: Client, alice: User) -> None:
    resp = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert resp.status_code == 302
    assert client.get(reverse("profile")).context["user"] == alice
    client.post(reverse("logout"))
    assert client.get(reverse("profile")).status_code == 302


def test_wrong_password_is_refused(client: Client, alice: User) -> None:
    resp = client.post(reverse("login"), {"username": "alice", "password": "nope"})
    assert resp.status_code == 200
    assert "_auth_user_id" not in client.session


def test_password_change(client: Client, alice: User) -> None:
    client.force_login(alice)
    new = "another-long-passphrase-42"
    resp = client.post(
        reverse("password_change"), {"old_password": PASSWORD, "new_password1": new, "new_password2": new}
    )
    assert resp.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password(new)


def test_password_reset_sends_a_working_link(client: Client, alice: User) -> None:
    client.post(reverse("password_reset"), {"email": "alice@example.com"})
    assert len(mail.outbox) == 1
    link = re.search(r"https?://[^/]+(/accounts/reset/\S+/)", str(mail.outbox[0].body))
    assert link
    resp = client.get(link.group(1), follow=True)
    new = "brand-new-passphrase-77"
    resp = client.post(resp.redirect_chain[-1][0], {"new_password1": new, "new_password2": new})
    assert resp.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password(new)


def test_profile_needs_login(client: Client) -> None:
    resp = client.get(reverse("profile"))
    assert resp.status_code == 302
    assert reverse("login") in resp["Location"]


def test_migrations_leave_exactly_the_role_groups() -> None:
    # learner and staff were groups nothing checked (portal/migrations/0002 removes them).
    assert set(Group.objects.values_list("name", flat=True)) == set(roles.ALL_ROLES) == {roles.INSTRUCTOR}


def test_instructor_role_is_granted_and_shown_on_the_profile(client: Client, alice: User) -> None:
    assert not roles.has_role(alice, roles.INSTRUCTOR)
    roles.grant_role(alice, roles.INSTRUCTOR)
    assert roles.has_role(alice, roles.INSTRUCTOR)
    client.force_login(alice)
    assert client.get(reverse("profile")).context["roles"] == [roles.INSTRUCTOR]


def test_grant_role_refuses_a_role_that_is_not_a_group() -> None:
    user = User.objects.create_user("dave")
    with pytest.raises(ValueError, match="unknown role 'learner'"):
        roles.grant_role(user, "learner")
