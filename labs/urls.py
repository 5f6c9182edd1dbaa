from django.urls import path

from labs import views

app_name = "labs"
urlpatterns = [
    path("labs/", views.catalog_page, name="catalog"),
    path("labs/<slug:slug>/", views.lab_page, name="detail"),
]
