"""A person's choice of how the portal reaches them."""

from .models import NotificationPreference


def set_notification_preference(user, *, email: bool, slack: bool) -> NotificationPreference:
    """Save how `user` wants to be told: by email, on Slack, both or neither."""
    preference, _ = NotificationPreference.objects.update_or_create(
        user=user, defaults={"email": email, "slack": slack}
    )
    return preference
