from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A person who signs in; identity and groups come from the IdP outside demo mode."""

    manager = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reports"
    )
    # The IdP's manager claim as given (an email or username), kept so that
    # the relation is made when the manager first signs in.
    manager_ref = models.CharField(max_length=254, blank=True, editable=False)

    def __str__(self):
        return self.get_full_name() or self.username

    @property
    def label(self):
        """Return the name shown in tables: full name with the username."""
        full = self.get_full_name()
        return f"{full} ({self.username})" if full else self.username
