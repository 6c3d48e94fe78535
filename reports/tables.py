"""The report tables: sortable by their columns, paginated by the view.

Rows come from `grants/selectors/reports.py` with their related rows joined and
their computed values annotated, so rendering a page never queries again.
"""

import json

import django_tables2 as tables
from django.urls import reverse
from django.utils import dateformat, timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

import grants.selectors as selectors

TIME = "Y-m-d H:i:s"


def _when(value) -> str:
    return dateformat.format(timezone.localtime(value), TIME) if value else "—"


def duration_text(delta) -> str:
    """Return e.g. '45 s', '30 min', '1 h 30 min', '2 d 3 h'."""
    if delta is None:
        return "—"
    seconds = max(int(delta.total_seconds()), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    days, minutes = divmod(minutes, 1440)
    hours, minutes = divmod(minutes, 60)
    return " ".join(f"{n} {u}" for n, u in ((days, "d"), (hours, "h"), (minutes, "min")) if n)


def _link(name, pk, text=None):
    if pk is None:
        return "—"
    return format_html('<a href="{}">{}</a>', reverse(name, args=[pk]), text or f"#{pk}")


def _label(choices):
    labels = dict(choices)
    return lambda value: labels.get(value, value)


class DurationColumn(tables.Column):
    def render(self, value):
        return duration_text(value)


class TimeColumn(tables.Column):
    """A time in the portal's time zone, `YYYY-MM-DD HH:MM:SS`, in a cell that does not wrap."""

    td_class = "time"  # read by reports/table.html, which skips django-tables2's per-cell attribute merging

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("default", "—")
        super().__init__(*args, **kwargs)

    def render(self, value):
        return _when(value)


class ReportTable(tables.Table):
    """A report table; `link_people` links usernames to their timelines (for auditors, who may open them)."""

    class Meta:
        attrs = {"class": "table report"}
        empty_text = "Nothing matches these filters."
        template_name = "reports/table.html"

    def __init__(self, *args, link_people=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.link_people = link_people

    def person(self, username):
        if not username:
            return "—"
        if not self.link_people:
            return username
        return format_html('<a href="{}">{}</a>', reverse("audit:timeline", args=[username]), username)


_access_outcome = _label(selectors.ACCESS_OUTCOMES)
_decision = _label(selectors.DECISION_OUTCOMES)


class AccessHistoryTable(ReportTable):
    grant = tables.Column(accessor="pk", verbose_name="Grant")
    user = tables.Column(accessor="user__username", verbose_name="Who")
    target = tables.Column(accessor="profile__target__name", verbose_name="Target")
    profile = tables.Column(accessor="profile__title", verbose_name="Profile")
    requested_at = TimeColumn(verbose_name="Requested")
    decided = tables.Column(accessor="decided_at", verbose_name="Decided", default="—")
    justification = tables.Column(accessor="request__justification", verbose_name="Justification", orderable=False)
    ticket = tables.Column(accessor="request__ticket", verbose_name="Ticket", default="")
    starts_at = TimeColumn(verbose_name="Started")
    ended_at = TimeColumn(verbose_name="Ended")
    actual_duration = DurationColumn(verbose_name="Duration", default="—")
    outcome = tables.Column(verbose_name="How it ended")
    activity = tables.Column(accessor="activity_summary", verbose_name="Activity", default="", orderable=False)

    class Meta(ReportTable.Meta):
        pass

    def render_grant(self, value):
        return _link("grants:grant_detail", value)

    def render_user(self, value):
        return self.person(value)

    def render_decided(self, value, record):
        request = record.request
        if record.decision == "break_glass":
            return format_html('<span class="badge bad">Break-glass</span><br><small>{}</small>', _when(value))
        who = request.decided_by.username if request.decided_by_id else f"rule: {request.auto_rule}"
        return format_html("{}<br><small>{}</small>", who, _when(value))

    def render_outcome(self, value, record):
        text = _access_outcome(value)
        if record.status == "revoking":
            return format_html("{} <small>(being removed)</small>", text)
        return text


class CurrentAccessTable(ReportTable):
    grant = tables.Column(accessor="pk", verbose_name="Grant")
    user = tables.Column(accessor="user__username", verbose_name="Who")
    target = tables.Column(accessor="profile__target__name", verbose_name="Target")
    profile = tables.Column(accessor="profile__title", verbose_name="Profile")
    state = tables.Column(verbose_name="State")
    starts_at = TimeColumn(verbose_name="Started")
    expires_at = TimeColumn(verbose_name="Expires")
    remaining = DurationColumn(verbose_name="Time left", order_by=("expires_at",))
    external_ref = tables.Column(verbose_name="Account on target")

    class Meta(ReportTable.Meta):
        pass

    def render_grant(self, value):
        return _link("grants:grant_detail", value)

    def render_user(self, value):
        return self.person(value)

    def render_state(self, value, record):
        text = _label(selectors.CURRENT_STATES)(value)
        if record.break_glass:
            return format_html('{} <span class="badge bad">Break-glass</span>', text)
        return text

    def render_external_ref(self, value):
        return format_html("<code>{}</code>", value)


class DecisionTable(ReportTable):
    request = tables.Column(accessor="pk", verbose_name="Request")
    requested_at = TimeColumn(accessor="created_at", verbose_name="Requested")
    requester = tables.Column(accessor="requester__username", verbose_name="Requester")
    target = tables.Column(accessor="profile__target__name", verbose_name="Target")
    profile = tables.Column(accessor="profile__title", verbose_name="Profile")
    duration = DurationColumn(verbose_name="Asked for")
    decision = tables.Column(verbose_name="Outcome")
    decided_by = tables.Column(accessor="decided_by__username", verbose_name="Decided by", default="—")
    decided_at = TimeColumn(verbose_name="Decided")
    time_to_decision = DurationColumn(verbose_name="Time to decision")
    decision_comment = tables.Column(verbose_name="Comment", orderable=False, default="")

    class Meta(ReportTable.Meta):
        pass

    def render_request(self, value):
        return _link("grants:request_detail", value)

    def render_requester(self, value):
        return self.person(value)

    def render_decision(self, value, record):
        text = _decision(value)
        if record.auto_rule and value == "auto_approved":
            return format_html("{}<br><small>rule: {}</small>", text, record.auto_rule)
        return text

    def render_decided_by(self, value):
        return self.person(value)


class _StatsTable(ReportTable):
    decided = tables.Column(verbose_name="Decided")
    approved = tables.Column(verbose_name="Approved")
    denied = tables.Column(verbose_name="Denied")
    avg_time_to_decision = DurationColumn(verbose_name="Mean time to decision", default="—")
    max_time_to_decision = DurationColumn(verbose_name="Longest", default="—")


class ProfileStatsTable(_StatsTable):
    profile = tables.Column(accessor="profile__title", verbose_name="Profile")
    target = tables.Column(accessor="profile__target__name", verbose_name="Target")
    auto_approved = tables.Column(verbose_name="Auto-approved")
    break_glass = tables.Column(verbose_name="Break-glass")
    lapsed = tables.Column(verbose_name="Lapsed")
    cancelled = tables.Column(verbose_name="Cancelled")
    auto_share = tables.Column(verbose_name="Auto-approval share", default="—")

    class Meta(ReportTable.Meta):
        sequence = (
            "profile",
            "target",
            "decided",
            "approved",
            "auto_approved",
            "break_glass",
            "denied",
            "lapsed",
            "cancelled",
            "auto_share",
            "avg_time_to_decision",
            "max_time_to_decision",
        )
        empty_text = "No decisions match these filters."

    def render_auto_share(self, value):
        return f"{value:.0%}"


class ApproverStatsTable(_StatsTable):
    approver = tables.Column(accessor="decided_by__username", verbose_name="Approver")

    class Meta(ReportTable.Meta):
        sequence = ("approver", "decided", "approved", "denied", "avg_time_to_decision", "max_time_to_decision")
        empty_text = "No decisions by a person match these filters."

    def render_approver(self, value):
        return self.person(value)


class BreakGlassTable(ReportTable):
    request = tables.Column(accessor="pk", verbose_name="Request")
    requested_at = TimeColumn(accessor="created_at", verbose_name="Used")
    user = tables.Column(accessor="requester__username", verbose_name="Who")
    target = tables.Column(accessor="profile__target__name", verbose_name="Target")
    profile = tables.Column(accessor="profile__title", verbose_name="Profile")
    justification = tables.Column(verbose_name="Emergency", orderable=False)
    grant_status = tables.Column(verbose_name="Grant", default="—")
    started_at = TimeColumn(verbose_name="Started")
    ended_at = TimeColumn(verbose_name="Ended")
    review_state = tables.Column(verbose_name="Review")

    class Meta(ReportTable.Meta):
        pass

    def render_request(self, value):
        return _link("grants:request_detail", value)

    def render_user(self, value):
        return self.person(value)

    def render_grant_status(self, value, record):
        return format_html(
            '{} <span class="badge status-{}">{}</span>', _link("grants:grant_detail", record.grant.pk), value, value
        )

    def render_review_state(self, value, record):
        review = getattr(record, "review", None)
        if value == "closed":
            return format_html(
                '<span class="badge status-approved">Closed</span> by {} at {}<br><small>{}</small>',
                review.closed_by.username,
                _when(review.closed_at),
                review.comment,
            )
        return mark_safe('<span class="badge warn">Open</span>')


class DriftTable(ReportTable):
    found_at = TimeColumn(verbose_name="Found")
    target = tables.Column(accessor="target__name", verbose_name="Target")
    external_ref = tables.Column(verbose_name="On the target")
    kind = tables.Column(verbose_name="Finding")
    grant = tables.Column(accessor="grant_id", verbose_name="Grant", default="—")
    user = tables.Column(accessor="grant__user__username", verbose_name="Holder", default="—")
    profile = tables.Column(accessor="grant__profile__title", verbose_name="Profile", default="—")
    action = tables.Column(verbose_name="Action", default="")
    resolved_at = TimeColumn(verbose_name="Resolved")

    class Meta(ReportTable.Meta):
        pass

    def render_external_ref(self, value):
        return format_html("<code>{}</code>", value)

    def render_kind(self, value):
        return _label(selectors.DRIFT_KINDS)(value)

    def render_grant(self, value):
        return _link("grants:grant_detail", value)

    def render_user(self, value):
        return self.person(value)


class TimelineTable(ReportTable):
    when = TimeColumn(verbose_name="When")
    what = tables.Column(verbose_name="What")
    request_no = tables.Column(verbose_name="Request", default="—")
    grant_no = tables.Column(verbose_name="Grant", default="—")
    target_name = tables.Column(verbose_name="Target", default="—")
    profile_name = tables.Column(verbose_name="Profile", default="—")
    counterpart = tables.Column(verbose_name="With", default="—")
    detail = tables.Column(verbose_name="Detail", orderable=False, default="")

    class Meta(ReportTable.Meta):
        empty_text = "Nothing in this period."

    def render_request_no(self, value):
        return _link("grants:request_detail", value)

    def render_grant_no(self, value):
        return _link("grants:grant_detail", value)


class EventTable(ReportTable):
    created_at = TimeColumn(verbose_name="When")
    action = tables.Column(verbose_name="Action")
    object = tables.Column(accessor="object_id", verbose_name="Object", orderable=False, default="—")
    details = tables.Column(verbose_name="Details", orderable=False)

    class Meta(ReportTable.Meta):
        empty_text = "No audit events in this period."

    def render_object(self, value, record):
        return f"{record.object_type} #{value}"

    def render_details(self, value):
        return format_html("<code>{}</code>", json.dumps(value, sort_keys=True, default=str))
