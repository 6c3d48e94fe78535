"""Forms of the access reviews' pages: open a campaign, decide an item, close early, reinstate a removal."""

from django import forms

import grants.selectors as selectors


class OpenReviewForm(forms.Form):
    title = forms.CharField(max_length=200, required=False, help_text="Empty: “Access review” and today's date.")
    profiles = forms.ModelMultipleChoiceField(
        queryset=selectors.reviewable_profiles(),
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Choose at least one access profile to review."},
    )
    due_at = forms.DateTimeField(
        label="Due",
        help_text="e.g. 2026-12-31 17:00 (your time zone)",
        error_messages={"invalid": "Give a date and time, e.g. 2026-12-31 17:00."},
    )
    undecided = forms.ChoiceField(
        label="Undecided items at the due date", choices=selectors.UNDECIDED_RULES.choices, widget=forms.RadioSelect
    )
    period_days = forms.IntegerField(label="Use counted over the last (days)", initial=90, min_value=1, max_value=366)


class DecideItemForm(forms.Form):
    item = forms.IntegerField(min_value=1, max_value=2**63 - 1, error_messages={"required": "Say which item."})
    decision = forms.ChoiceField(
        choices=selectors.REVIEW_DECISIONS.choices, error_messages={"required": "Choose keep or remove."}
    )
    comment = forms.CharField(max_length=2000, required=False)


class CloseReviewForm(forms.Form):
    confirm = forms.BooleanField(
        label="Yes, close it now: apply the campaign's rule to the undecided items and take no more decisions",
        error_messages={"required": "Tick the box to confirm: closing a campaign cannot be undone."},
    )


class ReinstateForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        required=False,
        error_messages={"max_length": "Say why in at most 2000 characters."},
    )
