"""Deprecated: the old dotted names of the notification tasks, for one release. Remove in the next one.

Before the notifications app, the lifecycle enqueued `grants.notify.<event>`
and failed messages were retried as `grants.notify.deliver` schedules. A
portal upgraded with such tasks still in its queue runs them through these
names; the migration notifications/0001 moves the schedules to the new
names. Nothing enqueues these names any more, and the core imports nothing
from here (tests/test_architecture.py exempts this module by name).
"""

from notifications.delivery import deliver
from notifications.tasks import (
    approval_escalated,
    approval_needed,
    approval_reminder,
    break_glass_used,
    decide_from_slack,
    drift_found_by_id,
    emergency_login_used,
    expiry_soon,
    grant_provisioned,
    grant_revoked,
    grants_revoked,
    request_decided,
)

__all__ = [
    "approval_escalated",
    "approval_needed",
    "approval_reminder",
    "break_glass_used",
    "decide_from_slack",
    "deliver",
    "drift_found_by_id",
    "emergency_login_used",
    "expiry_soon",
    "grant_provisioned",
    "grant_revoked",
    "grants_revoked",
    "request_decided",
]
