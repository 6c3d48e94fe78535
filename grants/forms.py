import datetime

from django import forms
from django.forms.utils import from_current_timezone
from django.utils import timezone

from accounts import timezones

from . import connectors
from .durations import format_duration, parse_duration
from .lifecycle import MAX_JUSTIFICATION
from .models import AccessProfile

DURATION_ERROR = "Write a duration such as 30m, 2h, 1h30m or 1d."


def _parse_duration_field(text):
    try:
        return parse_duration(text)
    except (ValueError, OverflowError):
        raise forms.ValidationError(DURATION_ERROR) from None


class WallClockField(forms.DateTimeField):
    """A datetime-local value as a naive wall-clock time; the form reads it in the zone chosen beside it."""

    widget = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")
    input_formats = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]

    def to_python(self, value):
        with timezone.override(datetime.UTC):
            value = super().to_python(value)
        return value.replace(tzinfo=None) if value else None


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
        help_text="What you will do and why (at least 20 characters, more where a profile asks). Approvers and "
        "auditors read this.",
    )
    ticket = forms.CharField(
        label="Ticket",
        required=False,
        max_length=100,
        help_text="Optional: an incident or change ticket, e.g. INC-1234.",
    )
    starts_at = WallClockField(label="Start", required=False)
    time_zone = forms.ChoiceField(
        label="Time zone", required=False, help_text="The zone the start is in; the portal remembers it to show times."
    )
    reviewers = forms.CharField(
        label="Suggested reviewers",
        required=False,
        max_length=500,
        help_text="Optional: usernames of approvers you would like to decide it, separated by commas; they are told "
        "first.",
    )
    also = forms.ModelMultipleChoiceField(
        queryset=None,
        label="Also request",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Other profiles to ask for with the same duration, justification and ticket; they are decided "
        "together.",
    )
    break_glass = forms.BooleanField(
        label="Break-glass",
        required=False,
        help_text="Emergency only: access is granted at once without approval, flagged, and reviewed afterwards",
    )

    def __init__(self, *args, profiles, break_glass=False, **kwargs):
        super().__init__(*args, **kwargs)
        # Any existing profile parses, so that the lifecycle (not the form)
        # refuses a forged choice and records the attempt; only the
        # profiles the user may request are offered.
        field = self.fields["profile"]
        field.queryset = AccessProfile.objects.all()
        field.widget.choices = [("", field.empty_label)] + [(p.pk, p.title) for p in profiles]
        field.error_messages["invalid_choice"] = "Pick one of the profiles listed."
        also = self.fields["also"]
        also.queryset = AccessProfile.objects.all()
        also.widget.choices = [(p.pk, p.title) for p in profiles]
        also.error_messages["invalid_choice"] = "Pick among the profiles listed."
        zone = timezone.get_current_timezone_name()
        self.fields[
            "starts_at"
        ].help_text = f"Leave empty to start as soon as approved; set it for a maintenance window (times in {zone})."
        self.fields["time_zone"].choices = [(name, name) for name in timezones.zone_names()]
        self.fields["time_zone"].initial = zone
        self.fields["time_zone"].error_messages["invalid_choice"] = "Pick a time zone from the list, e.g. Europe/Paris."
        if len(profiles) < 2:
            del self.fields["also"]
        if not break_glass:
            del self.fields["break_glass"]
        self._add_request_fields(profiles)
        # Read by the page's script: choosing a profile fills its default duration and shows its kind's fields.
        self.profile_hints = {
            p.pk: {"duration": format_duration(p.default_duration), "kind": p.target.kind} for p in profiles
        }

    def _add_request_fields(self, profiles):
        """Add the fields the offered profiles' target kinds take, before Break-glass (the script hides the rest)."""
        extra = connectors.request_fields(p.target.kind for p in profiles)
        for name, (field, kinds) in extra.items():
            attrs = {"data-kinds": " ".join(sorted(kinds))}
            if field.multiline:
                widget = forms.Textarea(attrs={**attrs, "rows": 2, "spellcheck": "false"})
            else:
                widget = forms.TextInput(attrs={**attrs, "autocomplete": "off"})
            which = " or ".join(sorted(kinds))
            self.fields[name] = forms.CharField(
                label=field.label,
                required=False,
                max_length=field.max_length,
                widget=widget,
                help_text=f"For {which} profiles. {field.help_text}".strip(),
            )
        self.request_field_names = list(extra)
        if extra and "break_glass" in self.fields:
            self.order_fields([n for n in self.fields if n != "break_glass"])

    def params(self) -> dict:
        """Return the values of the target kinds' fields that were filled in (the connector cleans them)."""
        return {name: self.cleaned_data[name] for name in self.request_field_names if self.cleaned_data.get(name)}

    def clean_duration(self):
        return _parse_duration_field(self.cleaned_data["duration"])

    def clean(self):
        cleaned = super().clean()
        wall = cleaned.get("starts_at")
        zone = cleaned.get("time_zone") or timezone.get_current_timezone_name()
        if wall is not None and "time_zone" not in self.errors:
            with timezone.override(timezones.zone_named(zone)):
                try:
                    # Refuses a wall-clock time that a DST change skips or repeats in that zone.
                    cleaned["starts_at"] = from_current_timezone(wall)
                except forms.ValidationError as exc:
                    self.add_error("starts_at", exc)
        return cleaned

    def clean_justification(self):
        # Length rules are the lifecycle's; the form only keeps a huge paste
        # from reaching it.
        text = self.cleaned_data["justification"]
        if len(text) > 10 * MAX_JUSTIFICATION:
            raise forms.ValidationError(
                f"Keep the justification under {MAX_JUSTIFICATION} characters (it has {len(text)})."
            )
        return text

    def profiles_asked(self) -> list[AccessProfile]:
        """Return the chosen profile first, then the other profiles ticked under Also request."""
        main = self.cleaned_data["profile"]
        return [main] + [p for p in self.cleaned_data.get("also", []) if p.pk != main.pk]


class DecisionForm(forms.Form):
    comment = forms.CharField(
        label="Comment", required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )
    # The step the approver was shown: the lifecycle refuses if it moved on.
    step = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)


class ExtensionForm(forms.Form):
    duration = forms.CharField(label="Extra time", max_length=20)
    justification = forms.CharField(label="Reason", max_length=10 * MAX_JUSTIFICATION)

    def clean_duration(self):
        return _parse_duration_field(self.cleaned_data["duration"])


class ReviewForm(forms.Form):
    comment = forms.CharField(
        label="Comment", required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )


class DelegationForm(forms.Form):
    delegate = forms.CharField(max_length=150, label="Delegate (username)")
    starts_at = forms.DateTimeField(label="From", help_text="YYYY-MM-DD HH:MM, in the portal's time zone.")
    ends_at = forms.DateTimeField(label="Until", help_text="At most 90 days after the start.")
    reason = forms.CharField(max_length=200, required=False, label="Reason", help_text="E.g. out of office.")


def usernames(text: str) -> list[str]:
    """Split 'a, b c' into ['a', 'b', 'c']."""
    return [name for name in text.replace(",", " ").split() if name]
