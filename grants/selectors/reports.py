"""Read-only rows for the report pages and their CSV downloads.

Each selector returns a queryset with flat annotations, so that a page
(select_related, one query per page of rows) and a download (values_list
over the same names) read the same thing in a constant number of queries.
The scope (everything, one person's own, one approver's decisions) is an
argument: the caller decides it once, before any filter is applied.
"""

import datetime as _datetime

from django.contrib.auth import get_user_model
from django.contrib.postgres.fields import DateTimeRangeField
from django.db import connections
from django.db.backends.postgresql.psycopg_any import DateTimeTZRange
from django.db.models import (
    Aggregate,
    Case,
    CharField,
    Count,
    DateTimeField,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    Func,
    IntegerField,
    Max,
    OuterRef,
    Q,
    Sum,
    TextField,
    Value,
    When,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, NullIf, TruncDate
from django.utils import timezone

from grants import policy, tallies
from grants.models import (
    AccessProfile,
    AccessRequest,
    Approval,
    ApproverDecisionDay,
    BreakGlassReview,
    Delegation,
    DriftFinding,
    Grant,
    OnCallSchedule,
    ProfileDecisionDay,
    StepAssignee,
    Target,
)

_GS, _RS = Grant.Status, AccessRequest.Status

# How a grant turned out: its status while it lives, its end reason once it ends.
ACCESS_OUTCOMES = [
    (_GS.SCHEDULED, "Scheduled"),
    (_GS.ACTIVE, "Active"),
    (_GS.FAILED, "Failed"),
    *Grant.EndReason.choices,
]
# How a request was decided (the definition: `policy.DECISION_OUTCOMES`).
DECISION_OUTCOMES = [(outcome.name, outcome.label) for outcome in policy.DECISION_OUTCOMES]
# Where a grant that may still exist on its target stands.
CURRENT_STATES = [
    ("active", "Active"),
    ("past_expiry", "Past expiry, being removed"),
    ("ending", "Ending, being removed"),
]
REVIEW_STATES = [("open", "Open"), ("closed", "Closed")]
DRIFT_KINDS = DriftFinding.Kind.choices


def report_targets():
    return Target.objects.order_by("name")


def report_profiles():
    return AccessProfile.objects.select_related("target").order_by("title")


def may_decide(user) -> bool:
    """Return whether `user` has decided a request, or may decide some (an approver group, a policy step, a manager)."""
    if AccessRequest.objects.filter(decided_by=user).exists() or Approval.objects.filter(approver=user).exists():
        return True
    # Asked because a schedule had them on call, or someone's delegate: they decide too.
    if StepAssignee.objects.filter(user=user).exists() or Delegation.objects.filter(delegate=user).exists():
        return True
    if any(user.username in schedule.members for schedule in OnCallSchedule.objects.only("members")):
        return True
    groups = policy.group_names(user)
    if AccessProfile.objects.filter(approver_group__name__in=groups).exists():
        return True
    is_manager = user.reports.exists()
    if is_manager and AccessProfile.objects.filter(manager_approves=True).exists():
        return True
    return any(
        step.group in groups or step.fallback_group in groups or (step.manager and is_manager)
        for profile in AccessProfile.objects.exclude(policy=None).select_related("policy")
        for step in policy.steps_for(profile)
    )


def _between(end, start):
    return ExpressionWrapper(end - start, output_field=DurationField())


def access_history_base(*, user=None):
    """Return one row per grant, newest first, with what the report filters on and nothing that needs a join.

    `outcome` is the status, or how it ended. The period filter works on
    `created_at` (approval) and `window_end` (when it was confirmed gone;
    None: it may still exist). Counting these rows reads only the grant
    table; `access_history_columns` adds what the report shows.
    """
    rows = Grant.objects.annotate(
        outcome=Case(
            When(status__in=[_GS.REVOKING, _GS.REVOKED], then=F("end_reason")),
            default=F("status"),
            output_field=CharField(),
        ),
    )
    if user is not None:
        rows = rows.filter(user=user)
    # Newest grant first: a walk of the (created_at, id) index, where ordering
    # by the request's time would join and sort every row before the first page.
    return rows.order_by("-created_at", "-pk")


def access_history_columns(rows):
    """Add the access-history report's columns to (filtered)
    `access_history_base` rows: request, decision, end, duration.

    `ended_at` is when the target was confirmed clean (`verified_at`, else
    `revoked_at`); until then a grant counts as live.
    """
    ended = Coalesce("verified_at", "revoked_at")
    return rows.select_related("user", "profile__target", "request__decided_by").annotate(
        requested_at=F("request__created_at"),
        decided_at=F("request__decided_at"),
        decision=policy.decision_outcome_expression(prefix="request__"),
        ended_at=ended,
        actual_duration=_between(ended, F("starts_at")),
        # Its one line, kept with the digest (grants/activity.py): the same text on both CSV paths.
        activity_summary=KT("activity__summary"),
    )


class _Existence(Func):
    """tstzrange(created_at, window_end, '[]'): exactly the
    expression of the grants_grant_period index (migration 0009)."""

    function = "tstzrange"
    template = "%(function)s(%(expressions)s, '[]')"


def existed_between(rows, start=None, end=None):
    """Keep the grants that existed (from approval until confirmed
    gone) at some time in [start, end); either may be None."""
    if connections[rows.db].vendor == "postgresql":
        existence = _Existence("created_at", "window_end", output_field=DateTimeRangeField())
        rows = rows.alias(existence=existence).filter(existence__overlap=DateTimeTZRange(start, end, "[)"))
        # Implied by the overlap; stated so that the newest-first walk of
        # (created_at, id) starts at the end of the period.
        return rows.filter(created_at__lt=end) if end is not None else rows
    period = Q()
    if start is not None:
        period &= Q(window_end__gte=start) | Q(window_end__isnull=True)
    if end is not None:
        period &= Q(created_at__lt=end)
    return rows.filter(period)


def current_access(*, now=None):
    """Return the grants that may exist on their targets right now, soonest expiry first, with the time `remaining`."""
    now = now or timezone.now()
    live = Q(status=_GS.ACTIVE, expires_at__gt=now)
    return (
        Grant.objects.filter(Q(status=_GS.ACTIVE) | Q(status=_GS.REVOKING, starts_at__isnull=False))
        .select_related("user", "profile__target", "request")
        .annotate(
            state=Case(
                When(live, then=Value("active")),
                When(status=_GS.ACTIVE, then=Value("past_expiry")),
                default=Value("ending"),
                output_field=CharField(),
            ),
            remaining=Case(
                When(live, then=_between(F("expires_at"), Value(now, output_field=DateTimeField()))),
                default=Value(_datetime.timedelta(0)),
                output_field=DurationField(),
            ),
            break_glass=F("request__break_glass"),
        )
        .order_by("expires_at", "pk")
    )


def decisions(*, decider=None):
    """Return every request that is no longer pending, with `decision` and `time_to_decision`, latest decision first.

    With `decider`, only the requests that person decided or approved a step of.
    """
    rows = (
        AccessRequest.objects.exclude(status=_RS.PENDING)
        .select_related("requester", "profile__target", "decided_by")
        .annotate(
            decision=policy.decision_outcome_expression(),
            time_to_decision=_between(F("decided_at"), F("created_at")),
        )
    )
    if decider is not None:
        rows = rows.filter(
            Q(decided_by=decider) | Exists(Approval.objects.filter(request=OuterRef("pk"), approver=decider))
        )
    return rows.order_by("-decided_at", "-pk")


def _whole_utc_days(start, end):
    """Return the first UTC day wholly in [start, end) and the day after the last (None: unbounded)."""
    first = stop = None
    if start is not None:
        start = start.astimezone(_datetime.UTC)
        first = start.date() + _datetime.timedelta(days=start.time() != _datetime.time.min)
    if end is not None:
        stop = end.astimezone(_datetime.UTC).date()
    return first, stop


def _midnight(day):
    return _datetime.datetime.combine(day, _datetime.time.min, tzinfo=_datetime.UTC)


def _add_up(key, *parts):
    """Merge lists of `tallies` sums keyed by `key` (counts and total times add up, longest times take the longest)."""
    merged = {}
    for rows in parts:
        for row in rows:
            into = merged.get(row[key])
            if into is None:
                merged[row[key]] = {**row, "person_time": row["person_time"] or _datetime.timedelta(0)}
                continue
            for name, value in row.items():
                if name == key or value is None:
                    continue
                if name == "person_time_max":
                    into[name] = value if into[name] is None else max(into[name], value)
                else:
                    into[name] += value
    return list(merged.values())


def _per_profile(rows):
    return list(rows.order_by().values("profile_id").annotate(**tallies.profile_sums()))


def _per_approver(rows):
    return list(
        rows.filter(decided_by__isnull=False).order_by().values("decided_by_id").annotate(**tallies.approver_sums())
    )


def _tallied(key, days, sums):
    return list(days.order_by().values(key).annotate(**{n: Max(n) if n == "person_time_max" else Sum(n) for n in sums}))


def decision_stats(rows, *, approver=None, tally=None) -> tuple[list[dict], list[dict], int]:
    """Aggregate `decisions()` rows per profile and per person who closed them (the last approval or a denial).

    Returns (per profile, per approver, number of rows): lists of dicts,
    one query each grouped by id (no joins), with the names looked up once.
    Per approver, only `approver`'s row if given. `auto_share` is
    auto-approved out of approved or denied.

    `tally` ({"start", "end", "target", "profile"}, each may be None) says
    that `rows` are filtered by that period, target and profile and nothing
    else: the day tallies (`grants/tallies.py`) then give the whole UTC days
    of the period, and only the rows of the partial days at its ends are
    read. The figures are the same as from the rows alone.
    """
    if tally is None or approver is not None:
        per_profile = _per_profile(rows)
        per_approver = _per_approver(rows if approver is None else rows.filter(decided_by=approver))
    else:
        first, stop = _whole_utc_days(tally["start"], tally["end"])
        profile_days, approver_days = ProfileDecisionDay.objects.all(), ApproverDecisionDay.objects.all()
        if first is not None and stop is not None and first >= stop:  # no whole UTC day: the rows alone
            profile_days, approver_days, edges = profile_days.none(), approver_days.none(), rows
        else:
            edge = Q(decided_at__isnull=True)
            if first is not None:
                profile_days, approver_days = profile_days.filter(day__gte=first), approver_days.filter(day__gte=first)
                edge |= Q(decided_at__lt=_midnight(first))
            if stop is not None:
                profile_days, approver_days = profile_days.filter(day__lt=stop), approver_days.filter(day__lt=stop)
                edge |= Q(decided_at__gte=_midnight(stop))
            edges = rows.filter(edge)
        if tally["target"] is not None:
            profile_days = profile_days.filter(profile__target=tally["target"])
        if tally["profile"] is not None:
            profile_days = profile_days.filter(profile=tally["profile"])
        per_profile = _add_up(
            "profile_id", _tallied("profile_id", profile_days, tallies.profile_sums()), _per_profile(edges)
        )
        if tally["target"] is None and tally["profile"] is None:
            per_approver = _add_up(
                "decided_by_id",
                [
                    {"decided_by_id": row.pop("approver_id"), **row}
                    for row in _tallied("approver_id", approver_days, tallies.APPROVER_SUMS)
                ],
                _per_approver(edges),
            )
        else:  # the approvers' tallies do not know profiles: the rows, fewer for the filter
            per_approver = _per_approver(rows)
    per_profile = [_finished(row) for row in per_profile if row["requests"]]
    per_approver = [_finished(row) for row in per_approver if row["decided"]]
    profiles = {
        p.pk: p
        for p in AccessProfile.objects.filter(pk__in=[r["profile_id"] for r in per_profile]).select_related("target")
    }
    people = dict(
        get_user_model().objects.filter(pk__in=[r["decided_by_id"] for r in per_approver]).values_list("pk", "username")
    )
    for row in per_profile:
        profile = profiles[row.pop("profile_id")]
        row["rows"] = row.pop("requests")
        row.update(
            {
                "profile__name": profile.name,
                "profile__title": profile.title,
                "profile__target__name": profile.target.name,
                "auto_share": row["auto_approved"] / row["decided"] if row["decided"] else None,
            }
        )
    for row in per_approver:
        row["decided_by__username"] = people[row.pop("decided_by_id")]
    per_profile.sort(key=lambda r: (r["profile__title"], r["profile__name"]))
    per_approver.sort(key=lambda r: r["decided_by__username"])
    return per_profile, per_approver, sum(r["rows"] for r in per_profile)


def _finished(row) -> dict:
    """Turn summed times into the mean and the longest time to a person's decision."""
    total, longest = row.pop("person_time") or _datetime.timedelta(0), row.pop("person_time_max")
    people = row.get("decided_by_person", row["decided"])
    row["avg_time_to_decision"] = total / people if people else None
    row["max_time_to_decision"] = longest
    return row


def decision_totals(per_profile) -> dict:
    """Add up `decision_stats` profile rows into one dict, with `auto_share` as for a profile."""
    keys = ("decided", "approved", "auto_approved", "break_glass", "denied", "lapsed", "cancelled", "decided_by_person")
    totals = {key: sum(row[key] for row in per_profile) for key in keys}
    timed = [row for row in per_profile if row["decided_by_person"] and row["avg_time_to_decision"] is not None]
    people = sum(row["decided_by_person"] for row in timed)
    totals["avg_time_to_decision"] = (
        sum((row["avg_time_to_decision"] * row["decided_by_person"] for row in timed), _datetime.timedelta()) / people
        if people
        else None
    )
    totals["max_time_to_decision"] = max((row["max_time_to_decision"] for row in timed), default=None)
    totals["auto_share"] = totals["auto_approved"] / totals["decided"] if totals["decided"] else None
    return totals


def break_glass_uses():
    """Return every break-glass request with its grant and the state of its review, latest first."""
    return (
        AccessRequest.objects.filter(break_glass=True)
        .select_related("requester", "profile__target", "review__closed_by", "grant")
        .annotate(
            review_state=Case(
                When(review__closed_at__isnull=False, then=Value("closed")),
                default=Value("open"),
                output_field=CharField(),
            ),
            grant_status=F("grant__status"),
            started_at=F("grant__starts_at"),
            ended_at=Coalesce("grant__verified_at", "grant__revoked_at"),
        )
        .order_by("-created_at", "-pk")
    )


def drift_report():
    """Return every drift finding, latest first (unlike `drift_findings`, unlimited: the report paginates)."""
    return DriftFinding.objects.select_related("target", "grant__user", "grant__profile").order_by("-found_at", "-pk")


# The timeline's words for each of `policy.DECISION_OUTCOMES` (the TIMELINE CSV column documents them).
TIMELINE_DECISIONS = {
    "approved": "request approved",
    "auto_approved": "request auto-approved",
    "break_glass": "request approved (break-glass)",
    "denied": "request denied",
    "lapsed": "request lapsed",
    "cancelled": "request cancelled",
}
TIMELINE_FIELDS = ("when", "what", "request_no", "grant_no", "target_name", "profile_name", "counterpart", "detail")


def _timeline_part(rows, *, profile_path, since, until, target_filter, profile_filter, **columns):
    """Return one source of the timeline as TIMELINE_FIELDS dicts, filtered by the period and catalog."""
    rows = rows.order_by().annotate(**columns)
    if since is not None:
        rows = rows.filter(when__gte=since)
    if until is not None:
        rows = rows.filter(when__lt=until)
    if target_filter is not None:
        rows = rows.filter(**{f"{profile_path}__target": target_filter})
    if profile_filter is not None:
        rows = rows.filter(**{profile_path: profile_filter})
    return rows.values(*TIMELINE_FIELDS)


def user_timeline(person, *, since=None, until=None, target=None, profile=None):
    """Return what `person` requested, held and decided as one time-ordered queryset of dicts (TIMELINE_FIELDS).

    One UNION query: it counts, sorts by any column and slices for
    pagination like any other queryset.
    """

    def text(value):
        return Value(value, output_field=CharField())

    none_int, none_text = Value(None, output_field=IntegerField()), Value(None, output_field=CharField())
    filters = {"since": since, "until": until, "target_filter": target, "profile_filter": profile}
    own = AccessRequest.objects.filter(requester=person)
    ended = Coalesce("verified_at", "revoked_at")
    parts = [
        _timeline_part(
            own,
            profile_path="profile",
            **filters,
            when=F("created_at"),
            what=Case(
                When(break_glass=True, then=text("requested (break-glass)")),
                When(extends__isnull=False, then=text("asked for more time")),
                default=text("requested"),
            ),
            request_no=F("pk"),
            grant_no=Coalesce("grant__id", "extends_id"),
            target_name=F("profile__target__name"),
            profile_name=F("profile__title"),
            counterpart=none_text,
            detail=Cast("justification", TextField()),
        ),
        _timeline_part(
            own.exclude(status=_RS.PENDING),
            profile_path="profile",
            **filters,
            when=F("decided_at"),
            what=policy.decision_outcome_expression(then={name: text(w) for name, w in TIMELINE_DECISIONS.items()}),
            request_no=F("pk"),
            grant_no=Coalesce("grant__id", "extends_id"),
            target_name=F("profile__target__name"),
            profile_name=F("profile__title"),
            counterpart=Coalesce(F("decided_by__username"), NullIf("auto_rule", Value(""))),
            detail=Cast("decision_comment", TextField()),
        ),
        _timeline_part(
            Grant.objects.filter(user=person, starts_at__isnull=False),
            profile_path="profile",
            **filters,
            when=F("starts_at"),
            what=text("access started"),
            request_no=F("request_id"),
            grant_no=F("pk"),
            target_name=F("profile__target__name"),
            profile_name=F("profile__title"),
            counterpart=none_text,
            detail=Cast("external_ref", TextField()),
        ),
        _timeline_part(
            Grant.objects.filter(user=person, revoke_requested_at__isnull=False),
            profile_path="profile",
            **filters,
            when=F("revoke_requested_at"),
            what=text("access ending"),
            request_no=F("request_id"),
            grant_no=F("pk"),
            target_name=F("profile__target__name"),
            profile_name=F("profile__title"),
            counterpart=F("ended_by__username"),
            detail=Cast("end_reason", TextField()),
        ),
        _timeline_part(
            Grant.objects.filter(user=person).annotate(ended=ended).filter(ended__isnull=False),
            profile_path="profile",
            **filters,
            when=F("ended"),
            what=text("access ended"),
            request_no=F("request_id"),
            grant_no=F("pk"),
            target_name=F("profile__target__name"),
            profile_name=F("profile__title"),
            counterpart=F("ended_by__username"),
            detail=Cast("end_reason", TextField()),
        ),
        _timeline_part(
            Approval.objects.filter(approver=person),
            profile_path="request__profile",
            **filters,
            when=F("created_at"),
            what=text("approved a request"),
            request_no=F("request_id"),
            grant_no=F("request__grant__id"),
            target_name=F("request__profile__target__name"),
            profile_name=F("request__profile__title"),
            counterpart=F("request__requester__username"),
            detail=Cast("comment", TextField()),
        ),
        _timeline_part(
            AccessRequest.objects.filter(decided_by=person, status=_RS.DENIED),
            profile_path="profile",
            **filters,
            when=F("decided_at"),
            what=text("denied a request"),
            request_no=F("pk"),
            grant_no=none_int,
            target_name=F("profile__target__name"),
            profile_name=F("profile__title"),
            counterpart=F("requester__username"),
            detail=Cast("decision_comment", TextField()),
        ),
        _timeline_part(
            Grant.objects.filter(ended_by=person).exclude(user=person),
            profile_path="profile",
            **filters,
            when=F("revoke_requested_at"),
            what=text("revoked someone's access"),
            request_no=F("request_id"),
            grant_no=F("pk"),
            target_name=F("profile__target__name"),
            profile_name=F("profile__title"),
            counterpart=F("user__username"),
            detail=Cast("end_reason", TextField()),
        ),
        _timeline_part(
            BreakGlassReview.objects.filter(closed_by=person),
            profile_path="request__profile",
            **filters,
            when=F("closed_at"),
            what=text("closed a break-glass review"),
            request_no=F("request_id"),
            grant_no=F("request__grant__id"),
            target_name=F("request__profile__target__name"),
            profile_name=F("request__profile__title"),
            counterpart=F("request__requester__username"),
            detail=Cast("comment", TextField()),
        ),
    ]
    return parts[0].union(*parts[1:], all=True).order_by("when", "what")


# Charts of the Reports overview ----------------------------------------------
# Day buckets in the portal's time zone (the days of the period filters), counted by the database: a query or
# two per chart, whatever the number of rows. The caller bounds the period [start, end): reports.filters.

# The quantiles the duration charts draw: the median and the 95th percentile.
QUANTILES = {"p50": 0.5, "p95": 0.95}


class _PercentileCont(Aggregate):
    """PostgreSQL's percentile_cont over an interval: the quantile, interpolated between the two nearest values."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression, *, fraction: float):
        # A float of our own (QUANTILES), never input: formatted into the SQL as a literal.
        super().__init__(expression, fraction=float(fraction), output_field=DurationField())


def quantile(ordered: list, fraction: float):
    """Return percentile_cont's `fraction` quantile of the sorted timedeltas `ordered` (None if empty)."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _per_day(rows, field, start, end):
    return rows.filter(**{f"{field}__gte": start, f"{field}__lt": end}).annotate(day=TruncDate(field)).order_by()


def _quantiles_per_day(rows, field, value, start, end) -> list[dict]:
    """Return {"day", "count", "p50", "p95"} per day of `field` in [start, end), of the durations `value`.

    PostgreSQL computes the quantiles itself; SQLite has no percentile
    function, so there the durations alone are read, in order, and
    interpolated the same way (`quantile`): the period bounds what is read.
    """
    rows = _per_day(rows, field, start, end).annotate(value=ExpressionWrapper(value, output_field=DurationField()))
    if connections[rows.db].vendor == "postgresql":
        sums = {name: _PercentileCont("value", fraction=fraction) for name, fraction in QUANTILES.items()}
        return list(rows.values("day").annotate(count=Count("pk"), **sums).order_by("day"))
    days: dict = {}
    for day, duration in rows.order_by("day", "value").values_list("day", "value"):
        days.setdefault(day, []).append(duration)
    return [
        {"day": day, "count": len(ordered), **{name: quantile(ordered, f) for name, f in QUANTILES.items()}}
        for day, ordered in days.items()
    ]


def grants_per_day(*, start, end) -> list[dict]:
    """Return {"day", "target", "grants"} per day and target: the grants made (on approval) in [start, end)."""
    rows = _per_day(Grant.objects, "created_at", start, end)
    per_target = rows.values("day", target=F("profile__target__name")).annotate(grants=Count("pk"))
    return list(per_target.order_by("day", "target"))


def decisions_per_day(*, start, end) -> list[dict]:
    """Return the Decisions report's counts (`tallies.profile_sums`: decided, auto_approved, ...) per decision day."""
    rows = _per_day(AccessRequest.objects.exclude(status=_RS.PENDING), "decided_at", start, end)
    return list(rows.values("day").annotate(**tallies.profile_sums()).order_by("day"))


def decision_times_per_day(*, start, end) -> list[dict]:
    """Return the count, median and 95th percentile of the time to a person's decision, per day of decision."""
    rows = AccessRequest.objects.filter(tallies.BY_PERSON)
    return _quantiles_per_day(rows, "decided_at", F("decided_at") - F("created_at"), start, end)


def break_glass_per_day(*, start, end) -> list[dict]:
    """Return {"day", "uses", "open_reviews"} per day of use: break-glass requests, and those whose review is open."""
    rows = _per_day(AccessRequest.objects.filter(break_glass=True), "created_at", start, end)
    open_review = Q(review__closed_at__isnull=True)
    per_day = rows.values("day").annotate(uses=Count("pk"), open_reviews=Count("pk", filter=open_review))
    return list(per_day.order_by("day"))


def drift_per_day(*, start, end) -> list[dict]:
    """Return {"day", "kind", "findings"} per day and kind of the reconciler's findings."""
    rows = _per_day(DriftFinding.objects, "found_at", start, end)
    return list(rows.values("day", "kind").annotate(findings=Count("pk")).order_by("day", "kind"))


def expiry_lag_per_day(*, start, end, now=None) -> tuple[list[dict], list[dict]]:
    """Return, per day of `expires_at`, how long after expiry access was confirmed gone, and what is not yet.

    First: {"day", "count", "p50", "p95"} of `verified_at - expires_at` over
    grants that ended by expiry and were confirmed gone. Second: {"day",
    "unconfirmed"}: grants past their expiry that may still exist (still
    active, or expired and being removed).
    """
    now = now or timezone.now()
    confirmed = Grant.objects.filter(end_reason=Grant.EndReason.EXPIRED, verified_at__isnull=False)
    lag = _quantiles_per_day(confirmed, "expires_at", F("verified_at") - F("expires_at"), start, end)
    pending = Grant.objects.filter(
        Q(status=_GS.ACTIVE, expires_at__lte=now) | Q(status=_GS.REVOKING, end_reason=Grant.EndReason.EXPIRED)
    )
    unconfirmed = _per_day(pending, "expires_at", start, end).values("day").annotate(unconfirmed=Count("pk"))
    return lag, list(unconfirmed.order_by("day"))
