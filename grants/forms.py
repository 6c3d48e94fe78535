from django import forms

from .durations import parse_duration
from .models import AccessProfile
from .lifecycle import MAX_JUSTIFICATION

class RequestForm(forms.Form):
    profile = forms.ModelChoiceField(queryset=None, label="Access profile", empty_label="Choose a profile")
    duration = forms.CharField(
        label="Duration",
        max_length=20,
        help_text="How long you need it: 30m, 2h, 1h30m or 1d. The clock starts when the access is ready.",
        widget=forms.TextInput(attrs={"list": "duration-suggestions", "autocomplete": "off"}),
    )
    justification = forms.CharField(
        label="Justification",
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="What you will do and why (at least 20 characters, more where a profile asks). Approvers and auditors read this.",
    )
    ticket = forms.CharField(label="Ticket", required=False, max_length=100, help_text="Optional: an incident or change ticket, e.g. INC-1234.")

    def __init__(self, *args, profiles, **kwargs):
        super().__init__(*args, **kwargs)
        field = self.fields["profile"]
        # Any existing profile parses, so that the lifecycle (not the form)
        # refuses a forged choice and records the attempt; only the
        # profiles the user may request are offered.
        field.queryset = AccessProfile.objects.all()
        field.widget.choices = [("", field.empty_label)] + [(p.pk, p.title) for p in profiles]
        field.error_messages["invalid_choice"] = "Pick one of the profiles listed."

    def clean_duration(self):
        try:
            return parse_duration(self.cleaned_data["duration"])
        except (ValueError, OverflowError):
            raise forms.ValidationError("Write a duration such as 30m, 2h, 1h30m or 1d.") from None

    def clean_justification(self):
        # Length rules are the lifecycle's; the form only keeps a huge paste
        # from reaching it.
        text = self.cleaned_data["justification"]
        if len(text) > 10 * MAX_JUSTIFICATION:
            raise forms.ValidationError(f"Keep the justification under {MAX_JUSTIFICATION} characters (it has {len(text)}).")
        return text


class DecisionForm(forms.Form):
    comment = forms.CharField(label="Comment", required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
