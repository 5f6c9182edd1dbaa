from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordResetForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from portal import roles
from portal.accounts import throttle
from portal.accounts.forms import SignUpForm
from portal.accounts.throttle import LOGIN_PER_ACCOUNT, LOGIN_PER_IP, RESET_PER_IP, SIGNUP_PER_IP


@require_http_methods(["GET", "POST"])
@throttle.limit_posts((SIGNUP_PER_IP, "ip"))
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("home")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, _("Welcome to VirtLab, %(name)s.") % {"name": user.get_username()})
        return redirect("home")
    return render(request, "registration/signup.html", {"form": form})


# The login page: per IP and per account rates here; django-axes locks a username+IP pair out
# after repeated failures (AUTHENTICATION_BACKENDS, AxesMiddleware).
login_view = throttle.limit_posts((LOGIN_PER_IP, "ip"), (LOGIN_PER_ACCOUNT, throttle.posted_username))(
    auth_views.LoginView.as_view()
)


class PasswordResetView(auth_views.PasswordResetView):
    """Django's view already answers a known and an unknown address alike (a redirect to "check
    your e-mail"); this one also caps the mails one address receives, silently, like the rest."""

    def form_valid(self, form: PasswordResetForm) -> HttpResponse:
        if throttle.mail_allowed(self.request, form.cleaned_data["email"], "password reset"):
            return super().form_valid(form)
        return HttpResponseRedirect(self.get_success_url())


password_reset_view = throttle.limit_posts((RESET_PER_IP, "ip"))(PasswordResetView.as_view())


@login_required
def profile(request: HttpRequest) -> HttpResponse:
    user_roles = [r for r in roles.ALL_ROLES if roles.has_role(request.user, r)]
    return render(request, "registration/profile.html", {"roles": user_roles})
