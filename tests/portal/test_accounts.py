from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
from django.contrib.auth.models import AnonymousUser, Group, User
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from pytest_django import Settings

from portal import roles
from portal.accounts import verification
from portal.models import EmailAddress
from tests.conftest import PASSWORD
from tests.portal.test_settings import KEY, import_settings

# Sign-ups and resets are throttled in Redis: count them in a private one, from zero each test.
from tests.portal.test_throttle import fresh_throttle_counts, throttle_redis  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def test_signup_creates_an_account_with_no_role_and_logs_in(client: Client, settings: Settings) -> None:
    settings.ACCOUNT_EMAIL_VERIFICATION = False
    resp = client.post(
        reverse("signup"),
        {"username": "carol", "email": "Carol@Example.com", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert resp.status_code == 302
    user = User.objects.get(username="carol")
    assert user.email == "carol@example.com"
    assert not user.groups.exists()  # every account is a learner; instructor is granted, not signed up for
    assert client.get(reverse("profile")).status_code == 200
    assert verification.is_verified(user)
    assert mail.outbox == []
    assert not EmailAddress.objects.exists()


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


# --- no page tells which e-mail addresses have an account


def sign_up(username: str, email: str) -> tuple[int, str, list[str]]:
    """Status, redirect and flash messages of a sign-up, with this sign-up's own words masked."""
    client = Client()
    data = {"username": username, "email": email, "password1": PASSWORD, "password2": PASSWORD}
    resp = client.post(reverse("signup"), data, follow=True)
    shown = [str(m).replace(email.lower(), "<email>").replace(username, "<name>") for m in resp.context["messages"]]
    assert "_auth_user_id" in client.session
    return resp.status_code, resp.redirect_chain[-1][0], shown


@pytest.mark.parametrize("verify", [True, False])
def test_signup_with_a_taken_address_looks_like_any_other(settings: Settings, alice: User, verify: bool) -> None:
    settings.ACCOUNT_EMAIL_VERIFICATION = verify
    assert sign_up("carol", "ALICE@example.com") == sign_up("dave", "dave@example.com")
    assert User.objects.filter(username="carol", email="alice@example.com").exists()


def test_a_taken_address_gets_its_owner_a_notice_not_a_link(settings: Settings, alice: User) -> None:
    settings.ACCOUNT_EMAIL_VERIFICATION = True
    sign_up("carol", "alice@example.com")
    (notice,) = mail.outbox
    assert notice.to == ["alice@example.com"]
    assert "carol" in str(notice.body)
    assert "/accounts/login/" in str(notice.body)
    assert "/accounts/verify/" not in str(notice.body)
    carol = User.objects.get(username="carol")
    assert not verification.is_verified(carol)
    assert verification.is_verified(alice)


def test_password_reset_answers_a_known_and_an_unknown_address_alike(alice: User) -> None:
    pages = []
    for email in ("alice@example.com", "nobody@example.com"):
        resp = Client().post(reverse("password_reset"), {"email": email}, follow=True)
        pages.append((resp.status_code, resp.redirect_chain, resp.content))
    assert pages[0] == pages[1]
    (sent,) = mail.outbox
    assert sent.to == ["alice@example.com"]


# --- e-mail verification before a first lab


def link_in(body: str) -> str:
    found = re.search(r"https?://[^/]+(/accounts/verify/\S+/)", body)
    assert found, body
    return found.group(1)


@pytest.fixture
def unverified(settings: Settings) -> User:
    """A learner who just signed up with verification on; the link is in mail.outbox."""
    settings.ACCOUNT_EMAIL_VERIFICATION = True
    sign_up("erin", "erin@example.com")
    return User.objects.get(username="erin")


def test_signup_mails_a_link_and_the_link_verifies(client: Client, unverified: User) -> None:
    (sent,) = mail.outbox
    assert sent.to == ["erin@example.com"]
    assert not verification.is_verified(unverified)
    resp = client.get(link_in(str(sent.body)))
    assert resp.status_code == 200
    assert "Your e-mail address is verified" in resp.content.decode()
    assert verification.is_verified(unverified)
    assert client.get(link_in(str(sent.body))).status_code == 200  # a second click changes nothing


def test_signup_says_where_the_link_went_and_the_profile_says_what_is_missing(client: Client, unverified: User) -> None:
    shown = sign_up("fay", "fay@example.com")[2]
    assert shown == ["Welcome to VirtLab, <name>. We sent a link to <email>: follow it to verify your "
                     "address before your first lab."]  # fmt: skip
    client.force_login(unverified)
    page = client.get(reverse("profile")).content.decode()
    assert "not verified" in page
    assert "Verify erin@example.com before your first lab" in page


@pytest.mark.parametrize("edit", [lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), lambda t: "x" + t])
def test_a_tampered_link_is_refused(client: Client, unverified: User, edit: Callable[[str], str]) -> None:
    token = link_in(str(mail.outbox[0].body)).split("/")[-2]
    resp = client.get(reverse("verify_email", args=[edit(token)]))
    assert resp.status_code == 400
    assert "This link is not valid" in resp.content.decode()
    assert not verification.is_verified(unverified)


def test_an_expired_link_is_refused(client: Client, unverified: User, settings: Settings) -> None:
    address = EmailAddress.objects.get(user=unverified)
    with mock.patch("time.time", return_value=time.time() - settings.ACCOUNT_VERIFICATION_MAX_AGE_S - 60):
        token = verification.make_token(address)
    resp = client.get(reverse("verify_email", args=[token]))
    assert resp.status_code == 400
    assert "This link has expired" in resp.content.decode()
    assert not verification.is_verified(unverified)


def test_a_link_for_another_address_is_refused(client: Client, unverified: User) -> None:
    link = link_in(str(mail.outbox[0].body))
    EmailAddress.objects.filter(user=unverified).update(email="other@example.com")
    assert client.get(link).status_code == 400
    assert not verification.is_verified(unverified)


def test_only_the_first_account_to_prove_an_address_gets_it(client: Client, unverified: User) -> None:
    sign_up("erin2", "erin@example.com")  # the first one is unverified: the second gets a link too
    first, second = (link_in(str(m.body)) for m in mail.outbox)
    assert client.get(first).status_code == 200
    resp = client.get(second)
    assert resp.status_code == 400
    assert "Another account has verified this address already" in resp.content.decode()
    assert not verification.is_verified(User.objects.get(username="erin2"))


def test_the_profile_offers_a_new_link_within_the_mail_rate(
    client: Client, unverified: User, settings: Settings
) -> None:
    settings.ACCOUNT_MAIL_RATE = 2  # a new limit counts afresh: the sign-up's mail was under the old one
    client.force_login(unverified)
    assert "Send a new link" in client.get(reverse("profile")).content.decode()
    for _ in range(2):
        resp = client.post(reverse("resend_verification"), follow=True)
        assert "We sent a new link to erin@example.com." in resp.content.decode()
    assert len(mail.outbox) == 3
    resp = client.post(reverse("resend_verification"), follow=True)
    assert "No new link was sent to erin@example.com" in resp.content.decode()
    assert len(mail.outbox) == 3
    client.get(link_in(str(mail.outbox[-1].body)))
    assert "Send a new link" not in client.get(reverse("profile")).content.decode()


def test_accounts_without_a_signup_address_count_as_verified(settings: Settings, alice: User, tmp_path: Path) -> None:
    settings.ACCOUNT_EMAIL_VERIFICATION = True
    settings.VAR_DIR = tmp_path
    call_command("ensure_admin", stdout=open(tmp_path / "out", "w"))  # noqa: SIM115
    assert verification.is_verified(User.objects.get(username="admin"))
    assert verification.is_verified(alice)


def test_with_verification_on_anonymous_is_not_verified_and_off_everyone_is(
    settings: Settings, unverified: User
) -> None:
    assert not verification.is_verified(unverified)
    settings.ACCOUNT_EMAIL_VERIFICATION = False
    assert verification.is_verified(unverified)
    settings.ACCOUNT_EMAIL_VERIFICATION = True
    assert not verification.is_verified(AnonymousUser())


@pytest.mark.parametrize(("env", "expected"), [
    ({"DEBUG": "0"}, True), ({"DEBUG": "1"}, False), ({"DEBUG": "1", "ACCOUNT_EMAIL_VERIFICATION": "1"}, True),
])  # fmt: skip
def test_verification_is_on_by_default_unless_debug(tmp_path: Path, env: dict[str, str], expected: bool) -> None:
    proc = import_settings(tmp_path, ("ACCOUNT_EMAIL_VERIFICATION",), SECRET_KEY=KEY, **env)
    assert proc.stdout.strip() == repr(expected), proc.stderr
