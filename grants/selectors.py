"""Reads of the grants domain; the one door audit's report pages may use."""

from django.db.models import Q
from django.utils import timezone

from . import policy
from .models import AccessProfile, AccessRequest, BreakGlassReview, DriftFinding, Grant, Target


def requestable_profiles(user):
    """Return the enabled profiles `user` may ask for."""
    profiles = AccessProfile.objects.filter(enabled=True).select_related("target").order_by("title")
    group_ids = list(user.groups.values_list("pk", flat=True))
    return profiles.filter(Q(requestable_by__isnull=True) | Q(requestable_by__in=group_ids)).distinct()


def requests_awaiting(user):
    """Return the pending requests whose current step `user` may decide (never their own), oldest first."""
    pending = (
        AccessRequest.objects.filter(status=AccessRequest.Status.PENDING)
        .exclude(requester=user)
        .select_related("requester", "profile__target", "profile__policy", "profile__approver_group", "extends")
        .order_by("created_at")
    )
    return [req for req in pending if policy.approval_refusal(user, req) is None]


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


def own_requests(user, *, limit=20):
    return AccessRequest.objects.filter(requester=user).select_related("profile__target", "decided_by").order_by("-created_at")[:limit]


def may_view_request(user, access_request) -> bool:
    return access_request.requester_id == user.pk or policy.is_approver(user, access_request) or user.has_perm("grants.view_accessrequest")


def approvals_of(access_request):
    return list(access_request.approvals.select_related("approver"))


def bundle_others(access_request):
    """Return the other requests made together with this one."""
    if not access_request.bundle:
        return []
    return list(
        AccessRequest.objects.filter(bundle=access_request.bundle).exclude(pk=access_request.pk).select_related("profile").order_by("pk")
    )


def pending_extensions(grants) -> dict[int, int]:
    """Map grant id to the id of its extension request waiting for a decision."""
    return dict(
        AccessRequest.objects.filter(extends__in=[g.pk for g in grants], status=AccessRequest.Status.PENDING).values_list("extends_id", "pk")
    )


def own_request(user, request_id):
    """Return `user`'s own request `request_id`, or None."""
    return AccessRequest.objects.filter(pk=request_id, requester=user).select_related("profile").first()


def targets_overview():
    """Return every target with its count of live grants (one query)."""
    from django.db.models import Count

    return Target.objects.annotate(
        live=Count("profiles__grants", filter=Q(profiles__grants__status=Grant.Status.ACTIVE, profiles__grants__expires_at__gt=timezone.now()))
    ).order_by("name")


def drift_findings(*, limit=200):
    return DriftFinding.objects.select_related("target", "grant__user").order_by("-found_at")[:limit]
