"""Reads of who decides: the deciders and approvers of a request, their delegates, whom on-call named."""

from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils import timezone

from grants import policy
from grants.models import Delegation, StepAssignee


def _with_delegates(candidates):
    """Return the active `candidates` (a user queryset) and delegates of theirs whose delegation runs now, by id."""
    now = timezone.now()
    delegates = Delegation.objects.filter(delegator__in=candidates, starts_at__lte=now, ends_at__gt=now, ended_at=None)
    User = get_user_model()
    who = Q(pk__in=candidates.values("pk")) | Q(pk__in=delegates.values("delegate"))
    return User.objects.filter(who, is_active=True).order_by("pk")


def deciders_of(access_request) -> list:
    """Return the people who may decide the step the request waits for now (policy.may_decide), by id.

    The query only narrows the search to those a step could name; who is in
    is policy.may_decide's answer, as for the pages.
    """
    step, index = policy.waiting_step(access_request), policy.current_step(access_request)
    who = Q(pk__in=StepAssignee.objects.filter(request=access_request, step=index).values("user"))
    if step.group:
        who |= Q(groups__name=step.group)
    if step.fallback_group:
        who |= Q(groups__name=step.fallback_group)
    if step.manager and access_request.requester.manager_id:
        who |= Q(pk=access_request.requester.manager_id)
    candidates = get_user_model().objects.filter(who).exclude(pk=access_request.requester_id)
    return [user for user in _with_delegates(candidates) if policy.may_decide(user, access_request)]


def approvers_of(access_request) -> list:
    """Return the people who may decide some step of the request (policy.is_approver), never its requester, by id."""
    steps = policy.steps_for(access_request.profile)
    who = Q(pk__in=StepAssignee.objects.filter(request=access_request).values("user"))
    for step in steps:
        for group in filter(None, [step.group, step.fallback_group]):
            who |= Q(groups__name=group)
    if any(step.manager for step in steps) and access_request.requester.manager_id:
        who |= Q(pk=access_request.requester.manager_id)
    candidates = get_user_model().objects.filter(who).exclude(pk=access_request.requester_id)
    return [
        user
        for user in _with_delegates(candidates)
        if user.pk != access_request.requester_id and policy.is_approver(user, access_request)
    ]


def active_user(username: str):
    """Return the active user with this username, or None."""
    return get_user_model().objects.filter(username=username, is_active=True).first()


def delegations_of(user) -> tuple[list, list]:
    """Return (delegations `user` gave, delegations to `user`) that have not ended, soonest first."""
    now = timezone.now()
    live = (
        Delegation.objects.filter(ends_at__gt=now, ended_at=None)
        .select_related("delegator", "delegate")
        .order_by("starts_at")
    )
    return list(live.filter(delegator=user)), list(live.filter(delegate=user))


def on_call_asked(access_request):
    """Return whom on-call schedules named for the step the request waits for (with why), in the order asked."""
    index = policy.current_step(access_request)
    return list(StepAssignee.objects.filter(request=access_request, step=index).select_related("user"))
