"""Shared fixtures: the users every permission test needs (owner, other learner), and a guest agent
that answers from a script."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from axes.handlers.proxy import AxesProxyHandler
from django.contrib.auth.models import User
from pytest_django import Settings

from tests.browser_fixtures import artifacts, browser  # noqa: F401  (Playwright fixtures for every test folder)
from tests.scripted_agent import Answers, script_agent

PASSWORD = "correct-horse-battery-staple"


def make_user(username: str) -> User:
    return User.objects.create_user(username, f"{username}@example.com", PASSWORD)


@pytest.fixture
def alice(db: None) -> User:
    """A learner who owns things in tests."""
    return make_user("alice")


@pytest.fixture
def bob(db: None) -> User:
    """Another learner: must never see alice's things."""
    return make_user("bob")


@pytest.fixture
def carol(db: None) -> User:
    """A third learner (queues, classes)."""
    return make_user("carol")


@pytest.fixture(autouse=True)
def _axes_meets_this_tests_cache() -> Iterator[None]:
    """django-axes keeps the cache it met first; tests repoint the cache at private Redis servers
    that end with them, so it must look again in every test (or fail on a closed server)."""
    AxesProxyHandler.implementation = None
    yield
    AxesProxyHandler.implementation = None


@pytest.fixture(autouse=True)
def _fast_password_hashes(settings: Settings) -> None:
    settings.PASSWORD_HASHERS = ["tests.fast_hasher.FastPBKDF2PasswordHasher"]


@pytest.fixture(autouse=True)
def _plain_static_storage(settings: Settings) -> None:
    # The live server serves static files through the finders, which know the source names, not
    # the manifest's hashed ones; production (whitenoise + manifest) is exercised by bench/docs.py.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def fake_agent(monkeypatch: pytest.MonkeyPatch) -> Answers:
    """A GuestAgent on any domain answers from `fake_agent[command](arguments)` (tests/scripted_agent.py)."""
    return script_agent(monkeypatch)
