from django import forms
from django.conf import settings
from django.core.validators import MaxValueValidator


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
