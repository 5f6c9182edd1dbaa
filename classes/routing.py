"""Websocket routes of classes, mounted by portal/asgi.py next to labs' own."""

from __future__ import annotations

from typing import TYPE_CHECKING

from classes.consumers import ClassLiveConsumer
from labs.routing import websocket_path

if TYPE_CHECKING:
    from channels.routing import URLRouter, _ExtendedURLPattern

websocket_urlpatterns: list[_ExtendedURLPattern | URLRouter] = [
    websocket_path("ws/classes/<int:class_id>/live/", ClassLiveConsumer.as_asgi()),
]
