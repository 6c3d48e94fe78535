"""Filters of the report pages: period, user, target, profile, outcome, as GET parameters.

The same parameters filter a page and its CSV download. The viewer's scope
(one's own history, one's own decisions) is applied to the queryset before
these filters, so no filter can widen it.
"""

import datetime

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

import grants.selectors as selectors
from audit.models import AuditEvent

# Python's dates run from year 1 to 9999. A period ends at the midnight after
# `until`, and the database driver converts local midnights to UTC (up to a
# day either way), so a date at either end of the calendar overflows: the
# period's dates keep a day clear of both ends.
FIRST_DAY = datetime.date(1, 1, 2)
LAST_DAY = datetime.date(9998, 12, 31)


def _start_of(day: datetime.date) -> datetime.datetime:
    return timezone.make_aware(datetime.datetime.combine(day, datetime.time.min))


class PeriodDateField(forms.DateField):
    """A date the period filters can turn into a moment and count to the next day from."""

    widget = forms.DateInput(attrs={"type": "date", "min": FIRST_DAY.isoformat(), "max": LAST_DAY.isoformat()})

    def validate(self, value):
        super().validate(value)
        if value is not None and not FIRST_DAY <= value <= LAST_DAY:
            raise ValidationError(
                f"Enter a date between {FIRST_DAY.isoformat()} and {LAST_DAY.isoformat()}.", code="out_of_range"
            )


class PeriodDateFilter(django_filters.DateFilter):
    field_class = PeriodDateField


def _target_filter(field_name, **kwargs):
    return django_filters.ModelChoiceFilter(
        field_name=field_name,
        to_field_name="name",
        queryset=selectors.report_targets(),
        label="Target",
        empty_label="Any target",
        **kwargs,
    )


def _profile_filter(field_name, **kwargs):
    return django_filters.ModelChoiceFilter(
        field_name=field_name,
        to_field_name="name",
        queryset=selectors.report_profiles(),
        label="Profile",
        empty_label="Any profile",
        **kwargs,
    )


def _user_filter(field_name, label="User"):
    return django_filters.CharFilter(
        field_name=field_name, label=label, widget=forms.TextInput(attrs={"placeholder": "username", "size": 14})
    )


def _choice_filter(field_name, choices, label):
    return django_filters.ChoiceFilter(field_name=field_name, choices=choices, label=label, empty_label="Any")


class ReportFilter(django_filters.FilterSet):
    """Period filters on `period_field` (dates in the portal's
    time zone, `until` inclusive), and the scope's hidden fields.

    `hide` drops filters the viewer's scope already fixes (`user` on one's
    own history). Invalid input filters nothing in: `rows` is then empty.
    """

    since = PeriodDateFilter(label="From", method="filter_since")
    until = PeriodDateFilter(label="To (inclusive)", method="filter_until")

    period_field = "created_at"

    def __init__(self, data=None, queryset=None, *, hide=(), **kwargs):
        super().__init__(data, queryset, **kwargs)
        for name in hide:
            self.filters.pop(name, None)

    def filter_since(self, queryset, name, value):
        return queryset.filter(**{f"{self.period_field}__gte": _start_of(value)})

    def filter_until(self, queryset, name, value):
        return queryset.filter(**{f"{self.period_field}__lt": _start_of(value + datetime.timedelta(days=1))})

    @property
    def rows(self):
        # django-filter drops an invalid field and filters by the rest; a
        # report must not quietly show more than was asked for.
        if self.is_bound and not self.is_valid():
            return self.queryset.none()
        return self.qs

    def applied(self) -> dict[str, str]:
        """Return the filters in use, as the URL gives them (for the download's audit event)."""
        if not self.is_bound:
            return {}
        return {name: self.data.get(name) for name in self.filters if self.data.get(name) not in (None, "")}


class AccessHistoryFilter(ReportFilter):
    """A grant is in the period if it existed at some time in
    it: from its approval until its access was confirmed gone."""

    user = _user_filter("user__username")
    target = _target_filter("profile__target")
    profile = _profile_filter("profile")
    outcome = _choice_filter("outcome", selectors.ACCESS_OUTCOMES, "Outcome")

    # Both ends together make one range-overlap condition (indexed on PostgreSQL): see filter_queryset.
    def filter_since(self, queryset, name, value):
        return queryset

    filter_until = filter_since

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        since, until = self.form.cleaned_data.get("since"), self.form.cleaned_data.get("until")
        if since or until:
            queryset = selectors.existed_between(
                queryset, since and _start_of(since), until and _start_of(until + datetime.timedelta(days=1))
            )
        return queryset


class CurrentAccessFilter(ReportFilter):
    period_field = "starts_at"

    user = _user_filter("user__username")
    target = _target_filter("profile__target")
    profile = _profile_filter("profile")
    state = _choice_filter("state", selectors.CURRENT_STATES, "State")


class DecisionFilter(ReportFilter):
    period_field = "decided_at"

    user = _user_filter("requester__username", label="Requester")
    approver = _user_filter("decided_by__username", label="Decided by")
    target = _target_filter("profile__target")
    profile = _profile_filter("profile")
    outcome = _choice_filter("decision", selectors.DECISION_OUTCOMES, "Outcome")

    def tally(self) -> dict | None:
        """Return the period, target and profile for `selectors.decision_stats`'s
        day tallies, or None if other filters apply."""
        if not self.is_valid():
            return None
        data = self.form.cleaned_data
        if any(data.get(name) for name in ("user", "approver", "outcome")):
            return None
        since, until = data.get("since"), data.get("until")
        return {
            "start": since and _start_of(since),
            "end": until and _start_of(until + datetime.timedelta(days=1)),
            "target": data.get("target"),
            "profile": data.get("profile"),
        }


class BreakGlassFilter(ReportFilter):
    user = _user_filter("requester__username")
    target = _target_filter("profile__target")
    profile = _profile_filter("profile")
    review = _choice_filter("review_state", selectors.REVIEW_STATES, "Review")


class DriftFilter(ReportFilter):
    period_field = "found_at"

    user = _user_filter("grant__user__username")
    target = _target_filter("target")
    profile = _profile_filter("grant__profile")
    kind = _choice_filter("kind", selectors.DRIFT_KINDS, "Finding")


class TimelineFilter(ReportFilter):
    """Filters the person's audit events; its cleaned values also go to the timeline selector."""

    target = _target_filter("details__target", method="filter_snapshot")
    profile = _profile_filter("details__profile", method="filter_snapshot")

    class Meta:
        model = AuditEvent
        fields = []

    def filter_snapshot(self, queryset, name, value):
        # Events keep a snapshot of names (see lifecycle._snapshot), not foreign keys.
        return queryset.filter(**{name: value.name})

    def timeline_filters(self) -> dict:
        data = self.form.cleaned_data if self.is_bound and self.is_valid() else {}
        since, until = data.get("since"), data.get("until")
        return {
            "since": _start_of(since) if since else None,
            "until": _start_of(until + datetime.timedelta(days=1)) if until else None,
            "target": data.get("target"),
            "profile": data.get("profile"),
        }


class OverviewPeriodForm(forms.Form):
    """The Reports overview's period: whole days in the portal's time zone, `until` inclusive, at most MAX_DAYS.

    Without a date the period is the last DEFAULT_DAYS, today included: every
    chart's queries are bounded by it.
    """

    DEFAULT_DAYS = 30
    MAX_DAYS = 366

    since = PeriodDateField(label="From", required=False)
    until = PeriodDateField(label="To (inclusive)", required=False)

    def __init__(self, query, *, today=None):
        today = today or timezone.localdate()
        data = {
            "since": query.get("since") or (today - datetime.timedelta(days=self.DEFAULT_DAYS - 1)).isoformat(),
            "until": query.get("until") or today.isoformat(),
        }
        super().__init__(data)
        self.applied = {name: query.get(name) for name in ("since", "until") if query.get(name)}

    def clean(self):
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until:
            if since > until:
                raise ValidationError("The period ends before it starts.", code="reversed")
            if (until - since).days + 1 > self.MAX_DAYS:
                raise ValidationError(f"Choose at most {self.MAX_DAYS} days.", code="too_long")
        return data

    def period(self) -> tuple[datetime.datetime, datetime.datetime, list[datetime.date]]:
        """Return the period's first moment, the moment after it, and its days (the form must be valid)."""
        since, until = self.cleaned_data["since"], self.cleaned_data["until"]
        days = [since + datetime.timedelta(days=n) for n in range((until - since).days + 1)]
        return _start_of(since), _start_of(until + datetime.timedelta(days=1)), days

    def error_texts(self) -> list[str]:
        labels = {name: field.label for name, field in self.fields.items()}
        return [f"{labels[n]}: {m}" if n in labels else m for n, messages in self.errors.items() for m in messages]
