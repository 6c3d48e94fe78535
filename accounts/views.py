"""Personal settings pages: API tokens (a secret shown once, list,
revoke), notification choices, time zone, and the password step-up."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from . import stepup, timezones
from . import tokens as api_tokens
from .forms import NotificationForm, TimeZoneForm, TokenForm
from .models import ApiToken, NotificationPreference
from .notifications import set_notification_preference


@login_required
def tokens(request):
    form = TokenForm(request.POST or None)
    created = secret = None
    if request.method == "POST" and form.is_valid():
        created, secret = api_tokens.create_token(
            actor=request.user, name=form.cleaned_data["name"], days=form.cleaned_data["days"]
        )
        form = TokenForm()
    # The secret is rendered into this one response and kept nowhere:
    # no redirect, no session, no cache.
    response = render(
        request,
        "accounts/tokens.html",
        {"form": form, "created": created, "secret": secret, "tokens": api_tokens.own_tokens(request.user)},
    )
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def token_revoke(request, pk):
    try:
        token = api_tokens.revoke_token(pk, actor=request.user)
    except ApiToken.DoesNotExist:
        raise Http404 from None  # someone else's token: nothing to learn here
    messages.success(request, f"Token {token.name} ({token.prefix}…) revoked; it no longer works.")
    return redirect("accounts:tokens")


@login_required
def notifications(request):
    current = NotificationPreference.of(request.user)
    form = NotificationForm(request.POST or None, initial={"email": current.email, "slack": current.slack})
    if request.method == "POST" and form.is_valid():
        set_notification_preference(request.user, email=form.cleaned_data["email"], slack=form.cleaned_data["slack"])
        messages.success(request, "Notification settings saved.")
        return redirect("accounts:notifications")
    return render(
        request,
        "accounts/notifications.html",
        {
            "form": form,
            "preference": current,
            "slack_configured": bool(settings.SLACK_BOT_TOKEN),
            "zone_form": TimeZoneForm(initial={"time_zone": timezone.get_current_timezone_name()}),
        },
    )


@login_required
def step_up(request):
    """Confirm a risky action by re-entering one's password: for accounts without an IdP login (demo, emergency)."""
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        next_url = "/"
    if stepup.uses_idp(request.user):
        raise Http404  # they sign in again at the IdP instead (accounts/stepup.py)
    error = None
    if request.method == "POST":
        error = stepup.confirm_password(
            request, request.POST.get("password", ""), action=request.POST.get("for", "")[:40]
        )
        if error is None:
            return redirect(next_url)
    return render(
        request,
        "accounts/step_up.html",
        {
            "next": next_url,
            "error": error,
            "for": request.GET.get("for", request.POST.get("for", ""))[:40],
            "demo": settings.DEMO_MODE,
        },
        status=200,
    )


@login_required
@require_POST
def time_zone(request):
    """Set the person's zone (the tz cookie of accounts/timezones.py), the way that works without a script."""
    form = TimeZoneForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(form.errors["time_zone"]))
        return redirect("accounts:notifications")
    name = form.cleaned_data["time_zone"]
    messages.success(request, f"Times are now shown in {name}.")
    response = redirect("accounts:notifications")
    timezones.remember_zone(response, name)
    return response
