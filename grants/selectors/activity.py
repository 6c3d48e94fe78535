"""What each grant was used for, for the auditors' per-grant download (grants/activity.py keeps it)."""

from grants.activity import ACTIVITY_FIELDS, activity_rows
from grants.models import Grant

__all__ = ["ACTIVITY_FIELDS", "grant_activity", "grant_activity_rows"]


def grant_activity(pk) -> Grant | None:
    """Return grant `pk` with its activity, or None; who may read it is the caller's question (auditors)."""
    return Grant.objects.filter(pk=pk).first()


def grant_activity_rows(grant: Grant) -> list[dict]:
    """Return the rows of a grant's activity CSV (keys: ACTIVITY_FIELDS)."""
    return activity_rows(grant)
