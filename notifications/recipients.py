"""Who hears of a request: its approvers, those of the step it waits for, and its profile's channels."""

from django.contrib.auth import get_user_model
from django.db.models import Q

from grants import policy
from grants.models import AccessRequest, Approval, StepAssignee


def approvers_of(access_request: AccessRequest):
    """Return the active users who may decide some step of the request (never the requester)."""
    steps = policy.steps_for(access_request.profile)
    groups = [s.group for s in steps if s.group]
    who = Q(groups__name__in=groups)
    if any(s.manager for s in steps) and access_request.requester.manager_id:
        who |= Q(pk=access_request.requester.manager_id)
    return get_user_model().objects.filter(who, is_active=True).exclude(pk=access_request.requester_id).distinct()


def current_approvers(access_request: AccessRequest):
    """Return the active users who may decide the step the request waits for now."""
    steps = policy.steps_for(access_request.profile)
    step = steps[min(access_request.step, len(steps) - 1)]
    who = Q(pk__in=[])
    if step.group:
        who |= Q(groups__name=step.group)
    if step.manager and access_request.requester.manager_id:
        who |= Q(pk=access_request.requester.manager_id)
    if step.fallback_group and access_request.escalated_at:
        who |= Q(groups__name=step.fallback_group)
    who |= Q(pk__in=StepAssignee.objects.filter(request=access_request, step=policy.current_step(access_request)).values("user"))
    already = Approval.objects.filter(request=access_request).values("approver")
    return (
        get_user_model().objects.filter(who, is_active=True)
        .exclude(pk=access_request.requester_id).exclude(pk__in=already).distinct().order_by("pk")
    )


def routes_of(profile) -> dict[str, list[str]]:
    """Return where a profile's requests are announced: its own `notify`, per channel kind instead of its target's."""
    return {**(profile.target.notify or {}), **(profile.notify or {})}


def admins():
    """Return the portal's active superusers, who hear of drift."""
    return get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("pk")
