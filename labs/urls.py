from django.urls import path

from labs import views
from labs.timeline import views as timeline_views

app_name = "labs"
urlpatterns = [
    path("labs/", views.catalog_page, name="catalog"),
    path("labs/<slug:slug>/", views.lab_page, name="detail"),
    path("labs/sessions/<str:session_id>/replay/", timeline_views.replay_page, name="replay"),
    path("labs/sessions/<str:session_id>/replay.cast", timeline_views.replay_cast, name="replay_cast"),
    path("labs/sessions/<str:session_id>/download.cast", timeline_views.download_cast, name="download_cast"),
]
