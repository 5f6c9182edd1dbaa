from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordResetForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from portal import roles
from portal.accounts import throttle, verification
from portal.accounts.forms import SignUpForm
from portal.accounts.throttle import LOGIN_PER_ACCOUNT, LOGIN_PER_IP, RESET_PER_IP, SIGNUP_PER_IP


@require_http_methods(["GET", "POST"])
@throttle.limit_posts((SIGNUP_PER_IP, "ip"))
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("home")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        # An address another account owns is accepted like any other (see verification.py), so
        # this page never tells whether an e-mail address has an account.
        user = form.save()
        verification.on_signup(request, user)
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        welcome = _("Welcome to VirtLab, %(name)s.") % {"name": user.get_username()}
        if verification.required():
            welcome += " " + _(
                "We sent a link to %(email)s: follow it to verify your address before your first lab."
            ) % {"email": user.email}
        messages.success(request, welcome)
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
    context = {"roles": user_roles, "pending_address": verification.pending_address(request.user)}
    return render(request, "registration/profile.html", context)


def verify_email(request: HttpRequest, token: str) -> HttpResponse:
    outcome = verification.confirm(token)
    status = 200 if outcome is verification.Outcome.VERIFIED else 400
    return render(request, "registration/verify_email_done.html", {"outcome": outcome.value}, status=status)


@login_required
@require_POST
def resend_verification(request: HttpRequest) -> HttpResponse:
    address = verification.pending_address(request.user)
    if address is None:
        messages.info(request, _("Your e-mail address is verified."))
    elif verification.send(request, address):
        messages.success(request, _("We sent a new link to %(email)s.") % {"email": address.email})
    else:
        messages.error(
            request,
            _("No new link was sent to %(email)s: links went there recently. Check your inbox, or try again later.")
            % {"email": address.email},
        )
    return redirect("profile")
