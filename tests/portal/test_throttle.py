"""Log-in, sign-up and password reset are throttled per IP and per account, in Redis (every web
worker shares the counts), with a 429 page in the site's layout that says how long to wait."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis
from axes.handlers.proxy import AxesProxyHandler
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client, RequestFactory
from django.urls import reverse
from pytest_django import Settings

from portal.accounts.throttle import client_ip
from portal.client_address import UNKNOWN_IP
from tests.conftest import PASSWORD
from tests.lab_stack import point_settings_at_redis
from tests.servers import private_redis

pytestmark = [pytest.mark.django_db]

CLIENT_A, CLIENT_B = "198.51.100.7", "203.0.113.9"


@pytest.fixture(scope="session")
def throttle_redis() -> Iterator[str]:
    """A private Redis for the account tests (test_accounts.py imports these two fixtures)."""
    with private_redis() as url:
        yield url


@pytest.fixture(autouse=True)
def fresh_throttle_counts(settings: Settings, throttle_redis: str) -> Iterator[None]:
    """Each test counts from zero in a Redis of its own, never the shared development one."""
    redis.Redis.from_url(throttle_redis).flushdb()
    point_settings_at_redis(settings, throttle_redis)
    # Axes keeps the cache it met first; make it take the one these settings name, and forget it after.
    AxesProxyHandler.get_implementation(force=True)
    yield
    AxesProxyHandler.implementation = None


def log_in(
    username: str, password: str, ip: str = CLIENT_A, forwarded_for: str = "", language: str = "en"
) -> tuple[int, str, Client]:
    """One log-in from a client at `ip` (REMOTE_ADDR), sending X-Forwarded-For when given."""
    headers = {"Accept-Language": language} | ({"X-Forwarded-For": forwarded_for} if forwarded_for else {})
    client = Client(REMOTE_ADDR=ip, headers=headers)
    resp = client.post(reverse("login"), {"username": username, "password": password})
    return resp.status_code, resp.content.decode(), client


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def sign_up(username: str, ip: str = CLIENT_A) -> int:
    data = {"username": username, "email": f"{username}@example.com", "password1": PASSWORD, "password2": PASSWORD}
    return Client(REMOTE_ADDR=ip).post(reverse("signup"), data).status_code


# --- log-in lockout per username + IP (django-axes)


def test_the_sixth_attempt_after_five_wrong_passwords_is_locked_out_even_with_the_right_one(
    alice: User, caplog: pytest.LogCaptureFixture
) -> None:
    statuses = [log_in("alice", "wrong")[0] for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429]  # the fifth failure locks
    status, page, client = log_in("alice", PASSWORD)
    assert status == 429
    assert not logged_in(client)
    assert "Too many failed log-ins for this account from your network." in page
    assert "Try again in 15 minutes." in page
    assert 'class="site-header"' in page  # the site's layout, not a bare message
    assert any("throttle login-lockout" in r.getMessage() for r in caplog.records)


def test_a_lockout_spares_other_addresses_and_other_accounts(alice: User, bob: User) -> None:
    for _ in range(5):
        log_in("alice", "wrong", CLIENT_A)
    status, _, client = log_in("alice", PASSWORD, CLIENT_B)
    assert status == 302
    assert logged_in(client)
    status, _, client = log_in("bob", PASSWORD, CLIENT_A)
    assert status == 302
    assert logged_in(client)


def test_the_lockout_lasts_as_configured_and_lives_in_redis(
    alice: User, settings: Settings, throttle_redis: str
) -> None:
    settings.ACCOUNT_LOGIN_FAILURE_LIMIT = 2
    settings.ACCOUNT_LOGIN_LOCKOUT_S = 120
    assert log_in("alice", "wrong")[0] == 200
    status, page, _ = log_in("alice", "wrong")
    assert status == 429
    assert "Try again in 2 minutes." in page
    # Counted in Redis, not in this process: another web worker sees the same lockout, and it
    # expires with the cool-off.
    store = redis.Redis.from_url(throttle_redis)
    ttls = [store.ttl(key) for key in store.keys("*axes-*")]
    assert ttls
    assert all(0 < ttl <= 120 for ttl in ttls)
    assert log_in("alice", PASSWORD)[0] == 429
    store.flushdb()
    assert log_in("alice", PASSWORD)[0] == 302


def test_the_lockout_page_is_translated(alice: User) -> None:
    for _ in range(5):
        log_in("alice", "wrong")
    status, page, _ = log_in("alice", PASSWORD, language="zh-hans")
    assert status == 429
    assert "此账户从你的网络登录失败的次数太多。" in page
    assert "请在 15 分钟后重试。" in page


# --- request rates per IP and per account (django-ratelimit)


def test_log_ins_from_one_address_are_refused_past_its_rate(settings: Settings, alice: User) -> None:
    settings.ACCOUNT_LOGIN_IP_RATE = 3
    statuses = [log_in(name, "wrong")[0] for name in ("u1", "u2", "u3")]
    assert statuses == [200, 200, 200]
    status, page, client = log_in("alice", PASSWORD)
    assert status == 429
    assert not logged_in(client)
    assert "Too many log-in attempts from your network." in page
    assert log_in("alice", PASSWORD, CLIENT_B)[0] == 302


def test_log_ins_to_one_account_are_refused_past_its_rate_from_any_address(settings: Settings, alice: User) -> None:
    settings.ACCOUNT_LOGIN_ACCOUNT_RATE = 3
    addresses = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert [log_in("alice", "wrong", ip)[0] for ip in addresses] == [200, 200, 200]
    status, page, client = log_in("Alice", PASSWORD, "192.0.2.4")
    assert status == 429
    assert not logged_in(client)
    assert "Too many log-in attempts for this account." in page


def test_sign_ups_from_one_address_are_refused_past_its_rate_with_429(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.ACCOUNT_SIGNUP_IP_RATE = 2
    assert [sign_up("s1"), sign_up("s2")] == [302, 302]
    client = Client(REMOTE_ADDR=CLIENT_A)
    data = {"username": "s3", "email": "s3@example.com", "password1": PASSWORD, "password2": PASSWORD}
    resp = client.post(reverse("signup"), data)
    assert resp.status_code == 429
    assert "Too many new accounts from your network." in resp.content.decode()
    assert 0 < int(resp["Retry-After"]) <= 3600
    assert not User.objects.filter(username="s3").exists()
    assert any("throttle signup-ip" in r.getMessage() for r in caplog.records)
    assert client.get(reverse("signup")).status_code == 200  # only posts are counted
    assert sign_up("s4", CLIENT_B) == 302


def test_password_reset_requests_from_one_address_are_refused_past_its_rate(settings: Settings) -> None:
    settings.ACCOUNT_RESET_IP_RATE = 2
    client = Client(REMOTE_ADDR=CLIENT_A)
    for n in range(2):
        assert client.post(reverse("password_reset"), {"email": f"x{n}@example.com"}).status_code == 302
    resp = client.post(reverse("password_reset"), {"email": "x3@example.com"})
    assert resp.status_code == 429
    assert "Too many password reset requests from your network." in resp.content.decode()


def test_mails_to_one_address_are_capped_without_a_visible_difference(settings: Settings, alice: User) -> None:
    settings.ACCOUNT_MAIL_RATE = 2
    pages = []
    for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        resp = Client(REMOTE_ADDR=ip).post(reverse("password_reset"), {"email": "alice@example.com"})
        pages.append((resp.status_code, resp["Location"]))
    assert len(set(pages)) == 1
    assert len(mail.outbox) == 2


# --- the client's address: REMOTE_ADDR unless a setting says proxies stand in front


def test_without_a_trusted_proxy_x_forwarded_for_is_ignored(alice: User) -> None:
    # A client cannot escape its lockout by sending a new X-Forwarded-For each time.
    statuses = [log_in("alice", "wrong", forwarded_for=f"10.0.0.{n}")[0] for n in range(6)]
    assert statuses[4:] == [429, 429]


def test_behind_a_trusted_proxy_clients_are_told_apart_by_the_address_it_saw(settings: Settings, alice: User) -> None:
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = "10.0.0.2"
    for _ in range(5):
        log_in("alice", "wrong", proxy, forwarded_for=CLIENT_A)
    assert log_in("alice", PASSWORD, proxy, forwarded_for=CLIENT_A)[0] == 429
    # A spoofed leftmost entry does not help: the proxy appended the real address.
    assert log_in("alice", PASSWORD, proxy, forwarded_for=f"{CLIENT_B}, {CLIENT_A}")[0] == 429
    assert log_in("alice", PASSWORD, proxy, forwarded_for=CLIENT_B)[0] == 302


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (0, "203.0.113.9", "10.0.0.2"),
        (1, "203.0.113.9", "203.0.113.9"),
        (1, "1.1.1.1, 203.0.113.9", "203.0.113.9"),
        (2, "1.1.1.1, 203.0.113.9, 10.0.0.1", "203.0.113.9"),
        (2, "203.0.113.9", "203.0.113.9"),
        (1, "", "10.0.0.2"),
        (1, "not-an-address", "10.0.0.2"),
        (1, "2001:db8::1", "2001:db8::1"),
    ],
)
def test_client_ip(settings: Settings, proxies: int, forwarded: str, expected: str) -> None:
    settings.TRUSTED_PROXY_COUNT = proxies
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == expected


def test_a_request_without_an_address_is_counted_not_crashed(settings: Settings) -> None:
    settings.ACCOUNT_SIGNUP_IP_RATE = 1
    assert client_ip(RequestFactory().get("/", REMOTE_ADDR="")) == UNKNOWN_IP
    assert sign_up("n1", ip="") == 302
    assert sign_up("n2", ip="") == 429


@pytest.fixture(autouse=True)
def _quiet_axes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
