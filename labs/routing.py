"""Websocket routes, mounted by portal/asgi.py under Channels' URLRouter."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from django.urls import path

from labs import consumers

if TYPE_CHECKING:
    from channels.consumer import _ASGIApplicationProtocol
    from channels.routing import URLRouter, _ExtendedURLPattern


def websocket_path(route: str, app: _ASGIApplicationProtocol) -> _ExtendedURLPattern:
    """Django's path() with a consumer as its callback, the way Channels' URLRouter routes."""
    # django-stubs types path() for views only; types-channels calls the result _ExtendedURLPattern.
    return cast("_ExtendedURLPattern", path(route, app))  # type: ignore[arg-type]


websocket_urlpatterns: list[_ExtendedURLPattern | URLRouter] = [
    websocket_path("ws/sessions/<slug:session_id>/events/", consumers.SessionEventsConsumer.as_asgi()),
    websocket_path("ws/sessions/<slug:session_id>/terminal/", consumers.TerminalConsumer.as_asgi()),
]
