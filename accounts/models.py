from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone


class User(AbstractUser):
    """A person who signs in; identity and groups come from the IdP outside demo mode."""

    manager = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reports")
    # The IdP's manager claim as given (a subject, employee id or email: OIDC_MANAGER_MATCH),
    # kept so that the relation is made when the manager first signs in.
    manager_ref = models.CharField(max_length=254, blank=True, editable=False)
    # Stable keys the manager claim is matched against; set from the IdP's claims only.
    idp_subject = models.CharField(
        "IdP subject", max_length=255, blank=True, db_index=True, editable=False, help_text="The IdP's `sub` claim."
    )
    employee_id = models.CharField(
        max_length=150,
        blank=True,
        db_index=True,
        editable=False,
        help_text="The claim named by OIDC_EMPLOYEE_ID_CLAIM.",
    )
    identity_refreshed_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When groups, manager and state last came from the IdP."
    )
    # The sync job's last attempt, successful or not: a failing identity is tried again one interval later.
    identity_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Set when the IdP refused to refresh this identity and the portal deactivated
    # the account; a later sign-in at the IdP reactivates only such accounts.
    deactivated_by_idp_at = models.DateTimeField("deactivated by the IdP at", null=True, blank=True, editable=False)

    def __str__(self):
        return self.get_full_name() or self.username

    @property
    def label(self):
        """Return the name shown in tables: full name with the username."""
        full = self.get_full_name()
        return f"{full} ({self.username})" if full else self.username


class ApiToken(models.Model):
    """A personal token for the JSON API; only the SHA-256 of its secret is kept.

    Made and revoked by its owner through `accounts/tokens.py`; it always
    expires. It acts as its owner, under the same rules as the pages.
    """

    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What the owner uses it for, e.g. the CI job.")
    prefix = models.CharField(
        max_length=16, editable=False, help_text="The secret's first characters, to recognise it."
    )
    digest = models.CharField(max_length=64, unique=True, editable=False, help_text="SHA-256 of the secret, hex.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_usable(self):
        return self.revoked_at is None and self.expires_at > timezone.now()


class NotificationPreference(models.Model):
    """How a person wants to hear from the portal: email, Slack, or both.

    A person without a row gets both. `slack_user_id` is found by the
    person's email through Slack's `users.lookupByEmail` (bot token only)
    the first time a Slack message is sent to them.
    """

    user = models.OneToOneField("accounts.User", on_delete=models.CASCADE, related_name="notification_preference")
    email = models.BooleanField(default=True)
    slack = models.BooleanField(default=True)
    slack_user_id = models.CharField(max_length=32, blank=True, editable=False)
    # The address the Slack id was found for: a changed address is looked up again.
    slack_lookup_email = models.EmailField(blank=True, editable=False)

    def __str__(self):
        return f"Notifications of {self.user}"

    @classmethod
    def of(cls, user) -> "NotificationPreference":
        """Return the user's preference, or an unsaved one with the defaults."""
        try:
            return user.notification_preference
        except cls.DoesNotExist:
            return cls(user=user)
