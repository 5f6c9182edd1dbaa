from django.urls import URLPattern, path

from labs import consumers

websocket_urlpatterns: list[URLPattern] = [
    path("ws/sessions/<slug:session_id>/events/", consumers.SessionEventsConsumer.as_asgi()),
    path("ws/sessions/<slug:session_id>/terminal/", consumers.TerminalConsumer.as_asgi()),
]
