"""Who hears of a request: its approvers, those of the step it waits for, and its profile's channels."""

from django.contrib.auth import get_user_model

from grants import selectors

# Who may decide is the core's answer (grants.selectors, on policy.may_decide), as for the pages and the inbox.
approvers_of = selectors.approvers_of  # who may decide some step (a break-glass use is theirs to review)
current_approvers = selectors.deciders_of  # who may decide the step the request waits for now


def routes_of(profile) -> dict[str, list[str]]:
    """Return where a profile's requests are announced: its own `notify`, per channel kind instead of its target's."""
    return {**(profile.target.notify or {}), **(profile.notify or {})}


def admins():
    """Return the portal's active superusers, who hear of drift."""
    return get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("pk")
