"""Who may request, who may decide which step, and what a policy approves by itself.

Plain rules with no side effects; the lifecycle calls them under its locks.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import zoneinfo

from django.conf import settings
from django.utils import timezone

from .models import AccessProfile, AccessRequest

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@dataclasses.dataclass(frozen=True)
class Step:
    group: str | None = None
    manager: bool = False
    count: int = 1

    def describe(self) -> str:
        who = " or ".join(filter(None, [self.group and f"a member of {self.group}", self.manager and "the requester's manager"]))
        return f"{self.count} × {who}" if self.count > 1 else who


def steps_for(profile: AccessProfile) -> list[Step]:
    """Return the profile's approval steps: its policy's, or one step from its own approver fields."""
    if profile.policy_id and profile.policy.steps:
        return [Step(group=s.get("group"), manager=bool(s.get("manager")), count=int(s.get("count", 1))) for s in profile.policy.steps]
    group = profile.approver_group.name if profile.approver_group_id else None
    return [Step(group=group, manager=profile.manager_approves)]


def may_request(user, profile: AccessProfile) -> bool:
    """Return whether `user` may ask for `profile` (an empty requestable_by means everyone)."""
    if not user.is_authenticated or not user.is_active:
        return False
    allowed = list(profile.requestable_by.all())
    if not allowed:
        return True
    return user.groups.filter(pk__in=[g.pk for g in allowed]).exists()


def group_names(user) -> set[str]:
    """Return the names of `user`'s groups, read once per user object (a page asks many times)."""
    if not hasattr(user, "_jit_group_names"):
        user._jit_group_names = set(user.groups.values_list("name", flat=True)) if user.is_authenticated else set()
    return user._jit_group_names


def may_break_glass(user, profile: AccessProfile) -> bool:
    groups = profile.policy.break_glass_groups if profile.policy_id else []
    return bool(set(groups) & group_names(user))


def _eligible(user, access_request: AccessRequest, step: Step) -> bool:
    if step.group and step.group in group_names(user):
        return True
    return bool(step.manager and access_request.requester.manager_id == user.pk)


def is_approver(user, access_request: AccessRequest) -> bool:
    """Return whether `user` may decide some step of this request (own requests included)."""
    if not user.is_authenticated or not user.is_active:
        return False
    return any(_eligible(user, access_request, step) for step in steps_for(access_request.profile))


def approval_refusal(user, access_request: AccessRequest) -> str | None:
    """Return why `user` may not decide the request's current step, or None if they may."""
    if access_request.requester_id == user.pk:
        return "You cannot decide your own request."
    steps = steps_for(access_request.profile)
    step = steps[min(access_request.step, len(steps) - 1)]
    if not user.is_authenticated or not user.is_active or not _eligible(user, access_request, step):
        if is_approver(user, access_request):
            return f"This request now waits for step {access_request.step + 1} ({step.describe()}), which you may not approve."
        return "You are not an approver for this request."
    if access_request.status == AccessRequest.Status.PENDING and access_request.approvals.filter(approver=user).exists():
        return "You have already approved a step of this request; another person must approve this one."
    return None


# Justification and tickets -------------------------------------------------


def justification_errors(profile: AccessProfile, justification: str, ticket: str) -> dict[str, str]:
    """Return form errors for the profile policy's justification and ticket rules."""
    errors = {}
    policy = profile.policy if profile.policy_id else None
    minimum = policy.min_justification if policy else settings.JIT_MIN_JUSTIFICATION
    if len(justification) < minimum:
        errors["justification"] = f"Say why you need access in at least {minimum} characters."
    if policy and policy.ticket_pattern:
        if not ticket:
            errors["ticket"] = "This profile needs a ticket reference."
        elif not re.fullmatch(policy.ticket_pattern, ticket):
            errors["ticket"] = f"The ticket must look like {policy.ticket_pattern!r} (e.g. INC-1234)."
    return errors


def request_timeout(profile: AccessProfile) -> datetime.timedelta:
    if profile.policy_id and profile.policy.request_timeout:
        return profile.policy.request_timeout
    return datetime.timedelta(seconds=settings.JIT_REQUEST_TIMEOUT)


# Auto-approval -------------------------------------------------------------


def _in_business_hours(spec: dict, now: datetime.datetime) -> bool:
    local = now.astimezone(zoneinfo.ZoneInfo(spec.get("tz", "UTC")))
    days = spec.get("days", [0, 1, 2, 3, 4])
    start = datetime.time.fromisoformat(spec.get("start", "09:00"))
    end = datetime.time.fromisoformat(spec.get("end", "17:00"))
    return local.weekday() in days and start <= local.time() < end


def rule_matches(rule: dict, *, groups: set[str], duration: datetime.timedelta, ticket: str, now: datetime.datetime) -> bool:
    """Return whether a request meets every condition of one auto-approval rule."""
    if "groups" in rule and not groups & set(rule["groups"]):
        return False
    if "max_duration" in rule and duration > datetime.timedelta(seconds=int(rule["max_duration"])):
        return False
    if "business_hours" in rule and not _in_business_hours(rule["business_hours"], now):
        return False
    if "ticket_pattern" in rule and not re.fullmatch(rule["ticket_pattern"], ticket or ""):
        return False
    return True


def auto_approval_rule(access_request: AccessRequest, *, now=None, duration=None) -> str | None:
    """Return the name of the first rule of the profile's policy that approves this request, or None."""
    profile = access_request.profile
    if not profile.policy_id:
        return None
    groups = group_names(access_request.requester)
    for index, rule in enumerate(profile.policy.auto_approve or []):
        if rule_matches(
            rule, groups=groups, duration=duration or access_request.duration, ticket=access_request.ticket, now=now or timezone.now()
        ):
            return rule.get("name") or f"rule {index + 1}"
    return None
