"""Background work of the identity app (django-q2), run by the schedule made in migration 0005."""

from django.conf import settings

from . import identity


def sync_identities() -> dict[str, int]:
    """Refresh the identities that are due; stop starting new ones halfway through the task's timeout."""
    return identity.sync_identities(time_budget=settings.Q_CLUSTER["timeout"] / 2)
