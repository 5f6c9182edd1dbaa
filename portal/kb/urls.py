from django.urls import path, re_path

from . import views
from .content import IMAGE_NAME

app_name = "kb"
urlpatterns = [
    path("", views.index, name="index"),
    path("search/", views.search, name="search"),
    path("glossary/", views.glossary, name="glossary"),
    re_path(rf"^img/(?P<name>{IMAGE_NAME})$", views.image, name="image"),
    re_path(r"^(?P<lang>en|zh)/(?P<slug>[a-z0-9][a-z0-9-]*)/$", views.page, name="page"),
    path("<slug:slug>/", views.page_redirect, name="page_redirect"),
]
