from django.urls import path

from labs import views

app_name = "labs"
urlpatterns = [
    path("labs/", views.catalogue_page, name="catalogue"),
    path("labs/<slug:slug>/", views.lab_page, name="detail"),
]
