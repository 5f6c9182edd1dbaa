from django.contrib import admin
from django.urls import include, path

from labs.api import api
from portal import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("healthz/live", views.healthz_live, name="healthz_live"),
    path("classes/", views.classes, name="classes"),
    path("classes/", include("classes.urls")),
    path("classes/", include("classes.live_urls")),
    path("accounts/", include("portal.accounts.urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("docs/", include("portal.kb.urls")),
    path("", include("labs.urls")),
    path("api/", api.urls),
    path("admin/", admin.site.urls),
]
