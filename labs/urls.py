from django.urls import path
from django.views.generic import TemplateView

app_name = "labs"
urlpatterns = [path("labs/", TemplateView.as_view(template_name="portal/home.html"), name="catalogue")]
