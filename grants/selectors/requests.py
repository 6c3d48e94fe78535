"""Reads of access requests: what one may ask for, what waits for whom, what a viewer may see."""

from django.db.models import Q

from grants import connectors, policy
from grants.models import AccessProfile, AccessRequest, BreakGlassReview, EligibilityRemoval


def request_fields(kinds=None) -> dict[str, tuple[connectors.RequestField, set[str]]]:
    """Return the extra fields a request for these target kinds (default: every registered kind) takes.

    name -> (field, the kinds that take it); each kind's connector declares its
    own (`Connector.request_fields`), so the form and the API name none.
    """
    return connectors.request_fields(connectors.REGISTRY if kinds is None else kinds)


def requestable_profiles(user):
    """Return the enabled profiles `user` may ask for (policy.may_request: an access review's removal included)."""
    profiles = AccessProfile.objects.filter(enabled=True).select_related("target").order_by("title")
    group_ids = list(user.groups.values_list("pk", flat=True))
    removed = EligibilityRemoval.objects.in_force().filter(person=user.pk, role=policy.REQUESTER).values("profile")
    return (
        profiles.filter(Q(requestable_by__isnull=True) | Q(requestable_by__in=group_ids))
        .exclude(pk__in=removed)
        .distinct()
    )


def requests_awaiting(user):
    """Return the pending requests whose current step `user` may decide (never their own), oldest first."""
    pending = (
        AccessRequest.objects.filter(status=AccessRequest.Status.PENDING)
        .exclude(requester=user)
        .select_related("requester", "profile__target", "profile__policy", "profile__approver_group", "extends")
        .order_by("created_at")
    )
    return [req for req in pending if policy.may_decide(user, req)]


def open_reviews(user):
    """Return the open break-glass reviews `user` may close."""
    reviews = (
        BreakGlassReview.objects.filter(closed_at__isnull=True)
        .exclude(request__requester=user)
        .select_related("request__requester", "request__profile__target", "request__profile__policy", "request__grant")
        .order_by("created_at")
    )
    return [r for r in reviews if policy.is_approver(user, r.request)]


def recent_history(user, *, limit=5):
    """Return the latest requests of `user`, with their outcome, for an approver's context."""
    return (
        AccessRequest.objects.filter(requester=user)
        .select_related("profile", "decided_by", "grant")
        .order_by("-created_at")[:limit]
    )


def own_requests(user, *, limit=20):
    return (
        AccessRequest.objects.filter(requester=user)
        .select_related("profile__target", "decided_by")
        .order_by("-created_at")[:limit]
    )


def may_view_request(user, access_request) -> bool:
    """Say whether `user` may see `access_request`: its requester, an approver of its profile, or an auditor."""
    return (
        access_request.requester_id == user.pk
        or policy.is_approver(user, access_request)
        or user.has_perm("grants.view_accessrequest")
    )


def request_for_viewer(viewer, pk) -> AccessRequest | None:
    """Return request `pk` for `viewer`'s eyes, with what its page shows loaded; None if none exists that they may see.

    The pages and the API answer None with a 404, not a 403: outsiders learn
    nothing about who asked for what, not even that the request exists.
    """
    access_request = (
        AccessRequest.objects.select_related(
            "profile__target", "profile__policy", "profile__approver_group", "requester", "decided_by", "extends"
        )
        .filter(pk=pk)
        .first()
    )
    if access_request is None or not may_view_request(viewer, access_request):
        return None
    return access_request


def approvals_of(access_request):
    return list(access_request.approvals.select_related("approver", "on_behalf_of"))


def bundle_others(access_request):
    """Return the other requests made together with this one."""
    if not access_request.bundle:
        return []
    return list(
        AccessRequest.objects.filter(bundle=access_request.bundle)
        .exclude(pk=access_request.pk)
        .select_related("profile")
        .order_by("pk")
    )


def pending_extensions(grants) -> dict[int, int]:
    """Map grant id to the id of its extension request waiting for a decision."""
    return dict(
        AccessRequest.objects.filter(
            extends__in=[g.pk for g in grants], status=AccessRequest.Status.PENDING
        ).values_list("extends_id", "pk")
    )


def own_request(user, request_id):
    """Return `user`'s own request `request_id`, or None."""
    return AccessRequest.objects.filter(pk=request_id, requester=user).select_related("profile").first()
