from django.urls import include, path

from portal.accounts import views

urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path("profile/", views.profile, name="profile"),
    path("verify/resend/", views.resend_verification, name="resend_verification"),
    path("verify/<str:token>/", views.verify_email, name="verify_email"),
    # Throttled versions of two of Django's auth views; the include below serves the rest
    # (logout, password change, password reset done/confirm/complete).
    path("login/", views.login_view, name="login"),
    path("password_reset/", views.password_reset_view, name="password_reset"),
    path("", include("django.contrib.auth.urls")),
]
