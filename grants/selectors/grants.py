"""Reads of grants: one's current and past access, a grant for a viewer, the grant a request made."""

from django.db.models import Q
from django.utils import timezone

from grants.models import Grant

from .requests import may_view_request


def current_grants(user):
    """Return the grants of `user` that are live or on their way in or out."""
    now = timezone.now()
    return (
        Grant.objects.filter(user=user)
        .filter(
            Q(status__in=[Grant.Status.SCHEDULED, Grant.Status.REVOKING])
            | Q(status=Grant.Status.ACTIVE, expires_at__gt=now)
            | Q(status=Grant.Status.ACTIVE, expires_at__lte=now)
        )
        .select_related("profile__target", "request")
        .order_by("expires_at", "pk")
    )


def past_grants(user, *, limit=20):
    return (
        Grant.objects.filter(user=user, status__in=[Grant.Status.REVOKED, Grant.Status.FAILED])
        .select_related("profile__target", "request")
        .order_by("-created_at")[:limit]
    )


def grant_for_viewer(viewer, pk) -> Grant | None:
    """Return grant `pk` if `viewer` may see the request that made it (as `request_for_viewer`), else None."""
    grant = Grant.objects.select_related("profile__target", "user", "request", "ended_by").filter(pk=pk).first()
    if grant is None or not may_view_request(viewer, grant.request):
        return None
    return grant


def grant_of(access_request) -> Grant | None:
    """Return the grant a request made, or for an extension the grant it extends."""
    grant = Grant.objects.filter(request=access_request).first()
    if grant is None and access_request.extends_id:
        grant = Grant.objects.filter(pk=access_request.extends_id).first()
    return grant
