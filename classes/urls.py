"""The class pages, under /classes/ (portal/urls.py mounts them; /classes/ itself is the list)."""

from __future__ import annotations

from django.urls import path

from classes import views

app_name = "classes"
urlpatterns = [
    path("new", views.create, name="create"),
    path("join", views.join_with_code, name="join_with_code"),
    path("join/<str:code>", views.join_page, name="join"),
    path("<int:class_id>/", views.detail, name="detail"),
    path("<int:class_id>/edit", views.edit, name="edit"),
    path("<int:class_id>/seats", views.seat_action, name="seat_action"),
    path("<int:class_id>/actions", views.class_action, name="class_action"),
    path("<int:class_id>/invites", views.invites, name="invites"),
    path("<int:class_id>/invites/<str:code>/revoke", views.revoke_invite, name="revoke_invite"),
    path("<int:class_id>/co-instructors", views.co_instructors, name="co_instructors"),
    path("<int:class_id>/seat", views.open_seat, name="open_seat"),
    path("<int:class_id>/leave", views.leave, name="leave"),
    path("<int:class_id>/export.csv", views.export_csv, name="export_csv"),
    path("<int:class_id>/export.json", views.export_json, name="export_json"),
]
