from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator

from . import timezones
from .login import login_wait, record_login_failure, wait_message


class AdminLoginForm(AdminAuthenticationForm):
    """The admin's password login (the emergency path outside demo mode), throttled per username and address."""

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        # Checked before the password, so that a guesser learns nothing while refused.
        wait = login_wait(self.request, username)
        if wait:
            record_login_failure(self.request, username, reason="throttled")
            raise ValidationError(wait_message(wait), code="throttled")
        return super().clean()

    def confirm_login_allowed(self, user):
        try:
            super().confirm_login_allowed(user)
        except ValidationError:
            # The right password of an account that may not use the admin: still a failure here.
            record_login_failure(self.request, user.get_username(), reason="not allowed in the admin")
            raise


class TokenForm(forms.Form):
    name = forms.CharField(label="Name", max_length=100, help_text="What it is for, e.g. the deploy job of shop-api.")
    days = forms.IntegerField(label="Expires in (days)", min_value=1, initial=30)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Read when the form is made, so that a test (or a reload) can change the setting.
        top = settings.JIT_API_TOKEN_MAX_DAYS
        days = self.fields["days"]
        days.validators.append(MaxValueValidator(top))
        days.widget.attrs["max"] = top
        days.help_text = f"1 to {top} days. Every token expires; make a new one then."


class NotificationForm(forms.Form):
    email = forms.BooleanField(label="Email", required=False, help_text="Mail to your address in the portal.")
    slack = forms.BooleanField(label="Slack", required=False, help_text="Direct messages from the portal's Slack app.")


class TimeZoneForm(forms.Form):
    time_zone = forms.ChoiceField(
        label="Time zone",
        help_text="Times on the portal's pages are shown in it, and a window's start is entered in it.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        field = self.fields["time_zone"]
        field.choices = [(name, name) for name in timezones.zone_names()]
        field.error_messages["invalid_choice"] = "Pick a time zone from the list, e.g. Europe/Paris."
