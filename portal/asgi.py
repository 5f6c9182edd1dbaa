"""ASGI entry point: each client held to its share of the process, then HTTP through Django and
websockets through Channels with Origin checks."""

import logging
import os
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import urlsplit

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django.setup(set_prefix=False)

from portal.http_handler import SyncChainASGIHandler  # noqa: E402  (needs Django set up first)

django_asgi_app = SyncChainASGIHandler()

from asgiref.typing import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.http.request import split_domain_port, validate_host  # noqa: E402
from django.utils.http import is_same_domain  # noqa: E402

from classes.routing import websocket_urlpatterns as class_routes  # noqa: E402
from labs.routing import websocket_urlpatterns  # noqa: E402
from portal.client_share import ClientShare  # noqa: E402

log = logging.getLogger("portal.websocket")
DEFAULT_PORTS = {"http": 80, "https": 443}
CLOSE_FORBIDDEN = 4403  # as labs.consumers refuses a socket the user may not see


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) origin, the port made explicit; None for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


def _request_scheme(scope: Mapping[str, Any], headers: dict[bytes, bytes]) -> str:
    """http or https, as Django's request.is_secure() decides it (the TLS proxy's header included)."""
    if settings.SECURE_PROXY_SSL_HEADER:
        header, secure_value = settings.SECURE_PROXY_SSL_HEADER
        name = header.removeprefix("HTTP_").replace("_", "-").lower().encode()
        if name in headers:
            return "https" if headers[name].decode("latin-1").split(",")[0].strip() == secure_value else "http"
    return "https" if scope.get("scheme") in ("wss", "https") else "http"


def origin_allowed(scope: Mapping[str, Any]) -> bool:
    """The rule Django's CSRF check applies to a POST: the Origin is the request's own (scheme, an
    allowed host, and port) or one of CSRF_TRUSTED_ORIGINS. Same host on another port or scheme is
    another origin (channels' AllowedHostsOriginValidator compared host names only)."""
    headers = {name.lower(): value for name, value in scope.get("headers", [])}
    raw = headers.get(b"origin", b"").decode("latin-1")
    origin = _origin(raw)
    if origin is None:  # absent, "null" (sandboxed frames, file: pages) or not http(s)
        return False
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        if "*" in trusted:  # "https://*.example.org": its subdomains, compared as Django does
            pattern = urlsplit(trusted)
            netloc = urlsplit(raw).netloc.lower()
            if pattern.scheme == origin[0] and is_same_domain(netloc, pattern.netloc.replace("*", "", 1)):
                return True
        elif _origin(trusted) == origin:
            return True
    domain, port = split_domain_port(headers.get(b"host", b"").decode("latin-1"))
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    scheme = _request_scheme(scope, headers)
    return origin == (scheme, domain.strip("[]"), int(port) if port else DEFAULT_PORTS[scheme])


class OriginValidator:
    """Refuses a websocket whose Origin is not this site's with close 4403, before anything else."""

    def __init__(self, app: ASGI3Application) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            headers = dict(scope.get("headers", []))
            log.warning("websocket %s refused: Origin %r is not this site's (Host %r)", scope.get("path"),
                        headers.get(b"origin", b"").decode("latin-1")[:200],
                        headers.get(b"host", b"").decode("latin-1")[:200])  # fmt: skip
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": CLOSE_FORBIDDEN, "reason": "origin not allowed"})
            return
        await self.app(scope, receive, send)


# ClientShare first: a client over its share is refused before anything else is spent on it.
application = ClientShare(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            # types-channels' middleware type admits ASGI2 apps too; AuthMiddlewareStack is ASGI3.
            "websocket": OriginValidator(
                cast(ASGI3Application, AuthMiddlewareStack(URLRouter(websocket_urlpatterns + class_routes)))
            ),
        }
    )
)
