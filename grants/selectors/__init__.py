"""Reads of the grants domain, one module per what is read; the edges' one door to them.

`from grants import selectors` and `selectors.requests_awaiting(user)`: every reader names the package,
which re-exports each module's public names.
"""

from .deciders import active_user, approvers_of, deciders_of, delegations_of, on_call_asked
from .grants import current_grants, grant_for_viewer, grant_of, past_grants
from .reports import (
    ACCESS_OUTCOMES,
    CURRENT_STATES,
    DECISION_OUTCOMES,
    DRIFT_KINDS,
    REVIEW_STATES,
    TIMELINE_DECISIONS,
    TIMELINE_FIELDS,
    access_history_base,
    access_history_columns,
    break_glass_per_day,
    break_glass_uses,
    current_access,
    decision_stats,
    decision_times_per_day,
    decision_totals,
    decisions,
    decisions_per_day,
    drift_per_day,
    drift_report,
    existed_between,
    expiry_lag_per_day,
    grants_per_day,
    may_decide,
    report_profiles,
    report_targets,
    user_timeline,
)
from .requests import (
    approvals_of,
    bundle_others,
    may_view_request,
    open_reviews,
    own_request,
    own_requests,
    pending_extensions,
    recent_history,
    request_fields,
    request_for_viewer,
    requestable_profiles,
    requests_awaiting,
)
from .targets import drift_findings, targets_overview

__all__ = [
    "request_fields", "requestable_profiles", "requests_awaiting", "open_reviews", "recent_history", "own_requests",
    "may_view_request", "request_for_viewer", "approvals_of", "bundle_others", "pending_extensions", "own_request",
    "current_grants", "past_grants", "grant_for_viewer", "grant_of", "deciders_of", "approvers_of", "active_user",
    "delegations_of", "on_call_asked", "targets_overview", "drift_findings", "ACCESS_OUTCOMES", "DECISION_OUTCOMES",
    "CURRENT_STATES", "REVIEW_STATES", "DRIFT_KINDS", "report_targets", "report_profiles", "may_decide",
    "access_history_base", "access_history_columns", "existed_between", "current_access", "decisions", "decision_stats",
    "decision_totals", "break_glass_uses", "drift_report", "TIMELINE_DECISIONS", "TIMELINE_FIELDS", "user_timeline",
    "grants_per_day", "decisions_per_day", "decision_times_per_day", "break_glass_per_day", "drift_per_day",
    "expiry_lag_per_day",
]
