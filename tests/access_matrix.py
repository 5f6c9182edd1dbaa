"""What the access matrix and the hostile-input tests share: who asks (the owner of a session, another
learner, staff, anonymous), a lab world to ask in (a private Redis, the test lab, an advertised host,
the owner's ready session), and every route the project serves, read from the URL resolver, the
API's OpenAPI document and the websocket router, so a new route cannot go untested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils import timezone
from pytest_django import Settings

from labs.models import LabSession
from labs.states import SessionState
from tests import lab_stack, servers

Who = Literal["owner", "other", "staff", "anonymous"]
WHO: tuple[Who, ...] = ("owner", "other", "staff", "anonymous")
HOST = "apitest"  # the host the lab world advertises and the owner's session runs on


R = TypeVar("R")


@dataclass(frozen=True)
class People:
    """Alice owns the session; Bob is another learner; Charlie is staff."""

    alice: User
    bob: User
    charlie: User

    def user(self, who: Who) -> User | None:
        return {"owner": self.alice, "other": self.bob, "staff": self.charlie, "anonymous": None}[who]


def matrix_cells(rows: Sequence[R], who: Sequence[str], statuses: Callable[[R], Sequence[int]],
                 row_id: Callable[[R], str]) -> list[Any]:  # fmt: skip
    """Every (row, who) cell of a permission matrix, as pytest params. The PostgreSQL pass
    (`-m "postgres and not matrix"`) runs each row once, as the first caller the row lets in (a 2xx,
    or 101 for a websocket; else the first caller), so every route's queries run on both databases;
    the other cells (`matrix`) are refusals, the same Python on either, and run on SQLite."""
    params = []
    for row in rows:
        answered = zip(who, statuses(row), strict=True)
        lets_in = next((w for w, status in answered if 200 <= status < 300 or status == 101), who[0])
        for w in who:
            mark = () if w == lets_in else pytest.mark.matrix
            params.append(pytest.param(row, w, id=f"{row_id(row)}-{w}", marks=mark))
    return params


def client_for(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[str]:
    """One private Redis for every lab world of the run (flushed per test): starting one per test
    would cost more than most of these tests."""
    with servers.private_redis() as url:
        yield url


@pytest.fixture
def lab_world(settings: Settings, tmp_path: Path, shared_redis: str) -> str:
    """A private Redis (emptied) with one advertised host, and a catalog holding the test lab; its slug."""
    redis.Redis.from_url(shared_redis).flushdb()
    lab_stack.point_settings_at_redis(settings, shared_redis)
    settings.CONTENT_DIR = tmp_path / "content"
    settings.VIRTLAB_HOST_NAME = HOST
    slug = lab_stack.write_test_lab(settings.CONTENT_DIR)
    lab_stack.advertise_host(HOST)
    return slug


@pytest.fixture(autouse=True)
def fast_passwords(settings: Settings) -> None:
    """Users are made by the dozen here: hash their passwords cheaply (who may do what is the point)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def charlie(db: None) -> User:
    """Staff: may observe any learner's session, never drive it."""
    return User.objects.create_user("charlie", "charlie@example.com", "x", is_staff=True)


@pytest.fixture
def people(alice: User, bob: User, charlie: User) -> People:
    return People(alice, bob, charlie)


@pytest.fixture
def session(alice: User, lab_world: str) -> LabSession:
    """Alice's lab, ready at step 1 with its checkpoint taken, on the advertised host."""
    now = timezone.now()
    return LabSession.objects.create(
        user=alice, lab_slug=lab_world, state=SessionState.READY, host=HOST, vm_id="v", checkpoints=[1],
        ready_at=now, expires_at=now + timedelta(minutes=5),
    )  # fmt: skip


# --- Every route ---------------------------------------------------------------------------------


def join_route(prefix: str, route: str) -> str:
    """A nested route as Django's resolver spells it (URLResolver._join_route): a regex pattern
    below a prefix loses its leading ^."""
    return prefix + route.removeprefix("^") if prefix else route


def url_routes() -> set[str]:
    """Every URL pattern Django resolves, as its full route, spelled as `resolve(path).route` spells it."""

    def walk(patterns: list[URLPattern | URLResolver], prefix: str) -> Iterator[str]:
        for pattern in patterns:
            route = join_route(prefix, str(pattern.pattern))
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, route)
            else:
                yield route

    return set(walk(get_resolver().url_patterns, ""))


def url_route_of(path: str) -> str:
    """The route that serves `path` (Resolver404 if none does)."""
    return str(resolve(path.split("?")[0]).route)


def api_operations() -> set[tuple[str, str]]:
    """(route, METHOD) of every operation in the API's OpenAPI document, routes spelled as Django's."""
    from labs.api import api

    paths: dict[str, dict[str, Any]] = api.get_openapi_schema()["paths"]
    return {
        (path.lstrip("/").replace("{", "<").replace("}", ">"), method.upper())
        for path, operations in paths.items()
        for method in operations
    }


def _websocket_leaves() -> list[tuple[str, list[Any]]]:
    """Every websocket route of the ASGI application with the chain of patterns that reaches it,
    found by walking the application as a connection is routed: the protocol router, the
    middlewares around the URL router, nested routers."""
    from channels.routing import ProtocolTypeRouter, URLRouter

    from portal.asgi import application

    leaves: list[tuple[str, list[Any]]] = []

    def walk(app: Any, prefix: str, chain: list[Any]) -> None:
        if isinstance(app, ProtocolTypeRouter):
            walk(app.application_mapping["websocket"], prefix, chain)
        elif isinstance(app, URLRouter):
            routes: list[Any] = list(app.routes)
            for route in routes:
                inner = getattr(route, "callback", None)
                if isinstance(inner, URLRouter):  # path("prefix/", URLRouter([...]))
                    walk(inner, prefix + str(route.pattern), [*chain, route.pattern])
                else:
                    leaves.append((prefix + str(route.pattern), [*chain, route.pattern]))
        else:
            for attr in ("inner", "application", "app"):  # middlewares wrap what they call in one of these
                if hasattr(app, attr):
                    walk(getattr(app, attr), prefix, chain)
                    return
            raise AssertionError(f"cannot see inside {app!r} to list its websocket routes")

    walk(application, "", [])
    return leaves


def websocket_routes() -> set[str]:
    return {route for route, _chain in _websocket_leaves()}


def websocket_route_of(path: str) -> str:
    """The websocket route that serves `path`, matched as Channels' URLRouter matches it."""
    for route, chain in _websocket_leaves():
        rest: str | None = path.lstrip("/")
        for pattern in chain:
            match = pattern.match(rest) if rest is not None else None
            rest = match[0] if match else None
        if rest is not None:
            return route
    raise AssertionError(f"no websocket route serves {path}")


# --- Content: a doc page written and built as `manage.py docs build` would ------------------------


def write_doc(
    content_dir: Path, slug: str, body: str, *, title: str = "Test page", summary: str = "A test page.",
    labs: tuple[str, ...] = (),
) -> None:  # fmt: skip
    """One page in both languages under content_dir/docs (front matter as content/docs/FORMAT.md)."""
    import json

    from portal.kb.content import short_hash

    docs = content_dir / "docs"
    for lang in ("en", "zh"):
        (docs / lang).mkdir(parents=True, exist_ok=True)
    front = (
        f"title: {json.dumps(title)}\nslug: {slug}\nsection: fundamentals\norder: 1\nsummary: {json.dumps(summary)}\n"
        f"labs: {json.dumps(list(labs))}\n"
    )
    en = docs / "en" / f"{slug}.md"
    en.write_text(f"---\n{front}---\n{body}")
    translated = f"---\n{front}source_hash: {short_hash(en.read_bytes())}\n---\n{body}"
    (docs / "zh" / f"{slug}.md").write_text(translated)


def build_content(content_dir: Path) -> Any:
    """Render and index content_dir/docs into the test database (the project's own build)."""
    from portal.kb import cache
    from portal.kb.build import build_docs

    report = build_docs(content_dir)
    cache.forget()  # in a test transaction on_commit never fires: the memo must not lag
    assert not report.errors, report.errors
    return report
