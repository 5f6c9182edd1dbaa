"""Who may keep a session's socket: Origin compared whole (scheme, host and port), and logging out
closes the user's sockets, and only theirs (in-process, against a private Redis)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import Client
from pytest_django import Settings

from labs.models import LabSession
from labs.states import SessionState
from tests.asgi_sockets import (
    Socket,
    closed_with,
    headers_for,
    opened,
    queued,
    run,
    session,
    terminal,
    told,
)

__all__ = ["session"]  # the fixture: alice's session, ready, against a private Redis
pytestmark = pytest.mark.django_db(transaction=True)


# --- Origin ---------------------------------------------------------------------------------------

Case = tuple[str, str, str | None, str | None]
SAME_ORIGIN: list[Case] = [
    # (scheme the server saw, Host, Origin, X-Forwarded-Proto)
    ("ws", "testserver", "http://testserver", None),
    ("ws", "127.0.0.1:8000", "http://127.0.0.1:8000", None),
    ("ws", "localhost:80", "http://localhost", None),
    ("wss", "testserver", "https://testserver", None),
    ("ws", "testserver", "https://testserver", "https"),  # TLS ends at the proxy in front
    ("ws", "[::1]:8000", "http://[::1]:8000", None),
]
OTHER_ORIGIN: list[Case] = [
    ("ws", "127.0.0.1:8000", "http://127.0.0.1:9999", None),  # the case: same host, other port
    ("ws", "testserver", "http://testserver:8080", None),
    ("ws", "testserver", "https://testserver", None),  # other scheme
    ("wss", "testserver", "http://testserver", None),
    ("ws", "testserver", "http://testserver", "https"),
    ("ws", "testserver", "https://evil.example", None),
    ("ws", "evil.example", "http://evil.example", None),  # a host this site does not serve
    ("ws", "testserver", "null", None),
    ("ws", "testserver", "file://testserver", None),
    ("ws", "testserver", "http://testserver:notaport", None),
    ("ws", "testserver", None, None),  # no Origin at all
]


def origin_headers(user: User, host: str, origin: str | None, proto: str | None) -> list[tuple[bytes, bytes]]:
    headers = [(name, value) for name, value in headers_for(user) if name not in (b"origin", b"host")]
    headers.append((b"host", host.encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if proto is not None:
        headers.append((b"x-forwarded-proto", proto.encode()))
    return headers


@pytest.mark.parametrize(("scheme", "host", "origin", "proto"), SAME_ORIGIN + OTHER_ORIGIN)
@pytest.mark.parametrize("kind", ["events", "terminal"])
def test_origin_must_match_scheme_host_and_port(session: LabSession, alice: User, kind: str, scheme: str, host: str,
                                                origin: str | None, proto: str | None) -> None:  # fmt: skip
    headers = origin_headers(alice, host, origin, proto)
    allowed = (scheme, host, origin, proto) in SAME_ORIGIN

    async def scenario() -> None:
        socket = Socket(f"/ws/sessions/{session.id}/{kind}/", headers, scheme=scheme)
        assert await socket.connect() == ((True, 0) if allowed else (False, 4403))

    run(scenario)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [("https://virtlab.example.org", True), ("https://virtlab.example.org:443", True),
     ("http://virtlab.example.org", False), ("https://virtlab.example.org:8443", False),
     ("https://lab.class.example.com", True), ("https://class.example.com", True),
     ("https://evilclass.example.com", False), ("http://lab.class.example.com", False)],
)  # fmt: skip
def test_trusted_origins_are_compared_whole(session: LabSession, alice: User, settings: Settings, origin: str,
                                            allowed: bool) -> None:  # fmt: skip
    settings.CSRF_TRUSTED_ORIGINS = ["https://virtlab.example.org", "https://*.class.example.com"]
    headers = origin_headers(alice, "internal:8000", origin, None)  # the proxy's Host is not the origin's

    async def scenario() -> None:
        socket = Socket(f"/ws/sessions/{session.id}/events/", headers)
        assert (await socket.connect())[0] is allowed

    run(scenario)


# --- Logout ---------------------------------------------------------------------------------------


def test_logging_out_closes_the_users_sockets_and_only_theirs(session: LabSession, alice: User, bob: User) -> None:
    browser = Client()
    browser.force_login(alice)
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver"),
               (b"cookie", f"sessionid={browser.cookies['sessionid'].value}".encode())]  # fmt: skip
    bobs = LabSession.objects.create(user=bob, lab_slug=session.lab_slug, state=SessionState.READY, host="h", vm_id="w")
    bob_headers = headers_for(bob)

    async def scenario() -> None:
        term = await opened(terminal(session, headers=headers))
        events = await opened(Socket(f"/ws/sessions/{session.id}/events/", headers))
        other = await opened(terminal(bobs, headers=bob_headers))
        await sync_to_async(browser.logout)()
        for closing in (term, events):
            error = await told(closing, "signed_out")
            assert error["type"] == "error"
            assert await closed_with(closing) == 4401
        await term.send_bytes(b"after\r")
        assert await other.silent()

    run(scenario)
    assert queued(session) == []
