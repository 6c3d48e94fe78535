"""What the notifications hear of: each of the core's events (grants.events) enqueues its task, with the ids.

Wiring only, run after the core's commit: the task reads the rows again, so
a late one tells the truth of now, and a slow mail server or Slack never
holds up a decision or a login.
"""

from django.db import transaction
from django_q.tasks import async_task


def _enqueue(func: str, *args) -> None:
    async_task(func, *args, group=func.rsplit(".", 1)[-1])


def on_approval_needed(request_id):
    _enqueue("notifications.tasks.approval_needed", request_id)


def on_approval_reminder(request_id):
    _enqueue("notifications.tasks.approval_reminder", request_id)


def on_approval_escalated(request_id):
    _enqueue("notifications.tasks.approval_escalated", request_id)


def on_request_decided(request_id):
    _enqueue("notifications.tasks.request_decided", request_id)


def on_break_glass_used(request_id):
    _enqueue("notifications.tasks.break_glass_used", request_id)


def on_grant_provisioned(grant_id):
    _enqueue("notifications.tasks.grant_provisioned", grant_id)


def on_expiry_soon(grant_id):
    _enqueue("notifications.tasks.expiry_soon", grant_id)


def on_grants_revoked(grant_ids):
    _enqueue("notifications.tasks.grants_revoked", grant_ids)


def on_drift_found(finding_ids):
    _enqueue("notifications.tasks.drift_found_by_id", finding_ids)


def on_access_review_opened(review_id):
    _enqueue("notifications.tasks.access_review_opened", review_id)


def on_access_review_reminder(review_id):
    _enqueue("notifications.tasks.access_review_reminder", review_id)


def on_eligibility_removed(removal_id):
    _enqueue("notifications.tasks.eligibility_removed", removal_id)


def on_eligibility_reinstated(removal_id):
    _enqueue("notifications.tasks.eligibility_reinstated", removal_id)


HANDLERS = {
    "approval_needed": on_approval_needed,
    "approval_reminder": on_approval_reminder,
    "approval_escalated": on_approval_escalated,
    "request_decided": on_request_decided,
    "break_glass_used": on_break_glass_used,
    "grant_provisioned": on_grant_provisioned,
    "expiry_soon": on_expiry_soon,
    "grants_revoked": on_grants_revoked,
    "drift_found": on_drift_found,
    "access_review_opened": on_access_review_opened,
    "access_review_reminder": on_access_review_reminder,
    "eligibility_removed": on_eligibility_removed,
    "eligibility_reinstated": on_eligibility_reinstated,
}


def on_emergency_login(sender, user, event, **kwargs):
    """Tell the security channel of a password login at the emergency path (accounts.signals), after commit."""
    transaction.on_commit(lambda: _enqueue("notifications.tasks.emergency_login_used", event.pk))
