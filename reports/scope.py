"""Who may see which report: decided once per request, before any filter is applied."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied

import grants.selectors as selectors

ALL, OWN, DECIDED = "all", "own", "decided"
AUDITOR_PERMISSION = "audit.view_auditevent"


def scope_for(user, report: str, *, subject: str | None = None) -> str:
    """Return how much of `report` `user` may see, or raise PermissionDenied.

    ALL: auditors (the `audit.view_auditevent` permission, e.g. the auditors
    group) and superusers; they alone see the other reports (current access,
    break-glass and drift, the overview's charts). OWN: anyone, their own access history and their
    own timeline (`subject` is the timeline's username). DECIDED: approvers,
    the decisions they took part in.
    """
    if user.has_perm(AUDITOR_PERMISSION):
        return ALL
    if report == "access" or (report == "timeline" and subject == user.username):
        return OWN
    if report == "decisions" and selectors.may_decide(user):
        return DECIDED
    raise PermissionDenied("Only auditors see this report.")


def may_see(user, report: str, *, subject: str | None = None) -> bool:
    try:
        scope_for(user, report, subject=subject)
    except PermissionDenied:
        return False
    return True
