"""URLs of the instructor's live view (mounted under /classes/ by portal/urls.py)."""

from __future__ import annotations

from django.urls import path

from classes.live_page import live_page

app_name = "classes_live"
urlpatterns = [
    path("<int:class_id>/live", live_page, name="grid"),
]
