"""Who may request, who may decide which step, and what a policy approves by itself.

Plain rules with no side effects; the lifecycle calls them under its locks.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import zoneinfo

from django.conf import settings
from django.db.models import Case, CharField, F, Q, Value, When
from django.utils import timezone

from accounts import stepup

from .durations import human_duration
from .models import AccessProfile, AccessRequest, Delegation, EligibilityRemoval, Grant, StepAssignee

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@dataclasses.dataclass(frozen=True)
class Step:
    group: str | None = None
    manager: bool = False
    schedule: str | None = None
    count: int = 1
    remind_after: datetime.timedelta | None = None  # remind the step's approvers once, this long after it opened
    escalate_after: datetime.timedelta | None = None  # then ask the fallback too
    fallback_group: str | None = None
    fallback_schedule: str | None = None

    def describe_fallback(self) -> str:
        return " or ".join(
            filter(
                None,
                [
                    self.fallback_group and f"a member of {self.fallback_group}",
                    self.fallback_schedule and f"whoever is on call for {self.fallback_schedule}",
                ],
            )
        )

    def describe(self) -> str:
        who = " or ".join(
            filter(
                None,
                [
                    self.group and f"a member of {self.group}",
                    self.manager and "the requester's manager",
                    self.schedule and f"whoever is on call for {self.schedule}",
                ],
            )
        )
        return f"{self.count} × {who}" if self.count > 1 else who


def step_from(spec: dict) -> Step:
    """Return the Step a policy's stored step (a dict, see Policy.steps) describes."""

    def seconds(key):
        return datetime.timedelta(seconds=spec[key]) if spec.get(key) else None

    fallback = spec.get("fallback") or {}
    return Step(
        group=spec.get("group"),
        manager=bool(spec.get("manager")),
        schedule=spec.get("schedule"),
        count=int(spec.get("count", 1)),
        remind_after=seconds("remind_after"),
        escalate_after=seconds("escalate_after"),
        fallback_group=fallback.get("group"),
        fallback_schedule=fallback.get("schedule"),
    )


def steps_for(profile: AccessProfile) -> list[Step]:
    """Return the profile's approval steps: its policy's, or one step from its own approver fields."""
    if profile.policy_id and profile.policy.steps:
        return [step_from(s) for s in profile.policy.steps]
    group = profile.approver_group.name if profile.approver_group_id else None
    return [Step(group=group, manager=profile.manager_approves)]


def current_step(access_request: AccessRequest) -> int:
    """Return the index of the step the request waits for, within the policy's steps as they are now.

    A `catalog apply` may shorten a policy below a pending request's step;
    such a request waits for the last step, so it can still be decided.
    """
    return min(access_request.step, len(steps_for(access_request.profile)) - 1)


def waiting_step(access_request: AccessRequest) -> Step:
    """Return the Step the request waits for (the one `current_step` names)."""
    return steps_for(access_request.profile)[current_step(access_request)]


def waiting_for(access_request: AccessRequest) -> str:
    """Return e.g. "step 2 of 3: 2 × a member of security": the step the request waits for, and who decides it.

    Pages, the API, Slack and messages all say it this way; capitalise it where it starts a sentence.
    """
    steps = steps_for(access_request.profile)
    index = current_step(access_request)
    return f"step {index + 1} of {len(steps)}: {steps[index].describe() or 'nobody is configured to approve it'}"


REQUESTER, APPROVER = "requester", "approver"  # the roles an access review removes (AccessReviewItem.Role)


def removed_by_review(user, profile: AccessProfile, role: str) -> bool:
    """Return whether an access review removed `user` from `role` ("requester" or "approver") of `profile`.

    Read afresh each time (never cached on the user): a removal takes effect at once, whatever the IdP's groups say.
    """
    return EligibilityRemoval.objects.in_force().filter(person=user, profile=profile, role=role).exists()


def may_request(user, profile: AccessProfile) -> bool:
    """Return whether `user` may ask for `profile` (an empty requestable_by means everyone), unless a review removed
    them."""
    if not user.is_authenticated or not user.is_active:
        return False
    allowed = list(profile.requestable_by.all())
    if allowed and not user.groups.filter(pk__in=[g.pk for g in allowed]).exists():
        return False
    return not removed_by_review(user, profile, REQUESTER)


def ineligibility(user, profile: AccessProfile) -> str | None:
    """Return why `user` may not have `profile` now, or None: every decision, extension and provisioning asks again."""
    if not user.is_active:
        return f"{user.username}'s account is deactivated"
    if not profile.enabled:
        return f"the access profile {profile.title} is disabled"
    if removed_by_review(user, profile, REQUESTER):
        return f"an access review removed {user.username} from those who may request {profile.title}"
    if not may_request(user, profile):
        return f"{user.username} is no longer in a group that may request {profile.title}"
    return None


def max_duration(access_request: AccessRequest) -> datetime.timedelta:
    """Return the longest span the request may make: the profile's maximum at submission, or today's if lower."""
    frozen = access_request.max_duration
    current = access_request.profile.max_duration
    return current if frozen is None else min(frozen, current)


def group_names(user) -> set[str]:
    """Return the names of `user`'s groups, read once per user object (a page asks many times)."""
    if not hasattr(user, "_jit_group_names"):
        user._jit_group_names = set(user.groups.values_list("name", flat=True)) if user.is_authenticated else set()
    return user._jit_group_names


def may_break_glass(user, profile: AccessProfile) -> bool:
    groups = profile.policy.break_glass_groups if profile.policy_id else []
    return bool(set(groups) & group_names(user))


# What needs a step-up on a risky profile, and how the refusal names it.
STEP_UP_ACTIONS = {
    "approve": "approving it",
    "break_glass": "break-glass access to it",
    "reveal": "showing its credentials",
}
CHANNELS = ("web", "api", "slack")


def needs_step_up(profile: AccessProfile) -> bool:
    """Return whether the profile's risk is one that STEP_UP_RISKS names."""
    return bool(profile.risk) and profile.risk in settings.STEP_UP_RISKS


def step_up_refusal(
    profiles, *, action: str, channel: str, step_up: stepup.StepUp | None, now: float | None = None
) -> str | None:
    """Return why `action` on these profiles may not go through `channel` with this step-up, or None if it may.

    Only profiles whose risk needs it ask anything. In the portal's pages the
    person must have signed in afresh (`accounts.stepup.problem`); an API token
    or a Slack button cannot show that, so they are refused unless
    STEP_UP_ALLOW_API / STEP_UP_ALLOW_SLACK say otherwise.
    """
    if action not in STEP_UP_ACTIONS or channel not in CHANNELS:
        raise ValueError(f"unknown step-up action {action!r} or channel {channel!r}")
    risky = [p for p in profiles if needs_step_up(p)]
    if not risky:
        return None
    what = f"{risky[0].title} is a {risky[0].risk}-risk profile: {STEP_UP_ACTIONS[action]} needs a fresh sign-in"
    if channel == "api":
        return None if settings.STEP_UP_ALLOW_API else f"{what} in the portal's pages; an API token cannot do it."
    if channel == "slack":
        return None if settings.STEP_UP_ALLOW_SLACK else f"{what} in the portal's pages; a Slack button cannot do it."
    problem = stepup.problem(step_up, now=now)
    return f"{what}: {problem}." if problem else None


def step_up_details(profiles, *, channel: str, step_up: stepup.StepUp | None) -> dict:
    """Return what the audit event of an allowed action says about its step-up ({} when none was needed)."""
    if not any(needs_step_up(p) for p in profiles):
        return {}
    if channel != "web":
        return {"step_up": {"waived": channel, "setting": f"STEP_UP_ALLOW_{channel.upper()}"}}
    return {"step_up": step_up.details()}


def _eligible(user, access_request: AccessRequest, step: Step, index: int) -> bool:
    # Asked last, of someone a step names (a delegate's delegators too): most checks never read the removals.
    return _named_by_step(user, access_request, step, index) and not removed_by_review(
        user, access_request.profile, APPROVER
    )


def _named_by_step(user, access_request: AccessRequest, step: Step, index: int) -> bool:
    if step.group and step.group in group_names(user):
        return True
    if step.manager and access_request.requester.manager_id == user.pk:
        return True
    escalated = access_request.escalated_at is not None and index == current_step(access_request)
    if escalated and step.fallback_group and step.fallback_group in group_names(user):
        return True
    # On call: whoever a schedule named when the step opened (or escalated), as recorded then.
    return StepAssignee.objects.filter(request=access_request, step=index, user=user).exists()


def delegators(user, *, now: datetime.datetime | None = None) -> list:
    """Return the active people whose delegation to `user` runs now."""
    if not user.is_authenticated or not user.is_active:
        return []
    if now is None and hasattr(user, "_jit_delegators"):
        return user._jit_delegators  # read once per user object, like its groups (an inbox asks per request)
    running = Delegation.objects.filter(
        delegate=user,
        starts_at__lte=now or timezone.now(),
        ends_at__gt=now or timezone.now(),
        ended_at=None,
        delegator__is_active=True,
    )
    found = [d.delegator for d in running.select_related("delegator").order_by("pk")]
    if now is None:
        user._jit_delegators = found
    return found


def _principals(user, access_request: AccessRequest) -> list:
    """Return who `user` may decide as: themselves, then each delegator (never the requester)."""
    return [user] + [d for d in delegators(user) if d.pk != access_request.requester_id]


def is_approver(user, access_request: AccessRequest) -> bool:
    """Return whether `user` may decide some step of this request
    (own requests included), themselves or as a delegate."""
    if not user.is_authenticated or not user.is_active:
        return False
    steps = list(enumerate(steps_for(access_request.profile)))
    if removed_by_review(user, access_request.profile, APPROVER):
        return False  # not as anyone's delegate either
    return any(
        _eligible(who, access_request, step, i) for who in _principals(user, access_request) for i, step in steps
    )


def on_behalf_of(user, access_request: AccessRequest):
    """Return the delegator `user` would decide the current step for,
    or None when they may decide it themselves (or not at all)."""
    index = current_step(access_request)
    step = steps_for(access_request.profile)[index]
    if _eligible(user, access_request, step, index):
        return None
    return next((d for d in _principals(user, access_request)[1:] if _eligible(d, access_request, step, index)), None)


def may_decide(user, access_request: AccessRequest) -> bool:
    """Return whether `user` may decide the step the request waits for now, themselves or as a delegate.

    The one answer to "who may approve": on-call and fallback asks, delegations
    and the one-step-per-person rule included. Pages, the API, Slack (through
    the lifecycle) and the recipient lists (selectors.deciders_of) ask it.
    """
    return approval_refusal(user, access_request) is None


def approval_refusal(user, access_request: AccessRequest) -> str | None:
    """Return why `user` may not decide the request's current
    step, or None if they may (themselves or as a delegate)."""
    if access_request.requester_id == user.pk:
        return "You cannot decide your own request."
    if user.is_authenticated and removed_by_review(user, access_request.profile, APPROVER):
        return f"An access review removed you from those who may approve {access_request.profile.title}."
    index = current_step(access_request)
    step = steps_for(access_request.profile)[index]
    active = user.is_authenticated and user.is_active
    principal = on_behalf_of(user, access_request) if active else None
    if not active or (principal is None and not _eligible(user, access_request, step, index)):
        if is_approver(user, access_request):
            return f"This request now waits for {waiting_for(access_request)}, which you may not approve."
        return "You are not an approver for this request."
    if access_request.status == AccessRequest.Status.PENDING:
        # One person approves at most one step, whether themselves or through a delegate.
        approvals = access_request.approvals
        if approvals.filter(Q(approver=user) | Q(on_behalf_of=user)).exists():
            return "You have already approved a step of this request; another person must approve this one."
        if principal is not None and approvals.filter(Q(approver=principal) | Q(on_behalf_of=principal)).exists():
            return (
                f"{principal.username} has already approved a step of this request; another person must approve "
                "this one."
            )
    return None


def approvals_counted(access_request: AccessRequest, index: int) -> int:
    """Return how many distinct people who may decide step `index` today have approved it.

    An approval by someone the step no longer names (the policy was changed
    under the request, or they left the group) does not count.
    """
    step = steps_for(access_request.profile)[index]
    approvals = access_request.approvals.filter(step=index).select_related("approver", "on_behalf_of")
    counted = 0
    for a in approvals:
        who = a.on_behalf_of or a.approver
        counted += a.approver.is_active and who.is_active and _eligible(who, access_request, step, index)
    return counted


# Spans: a person's touching or overlapping grants of one profile are one ----


Window = tuple[int, datetime.datetime, datetime.datetime]  # a grant's id, start and end


@dataclasses.dataclass(frozen=True)
class Span:
    """The stretch of access that a new window makes with a person's live grants of the same profile.

    `window` is the new access being judged (a request's window, or the time
    an extension adds); `joined` are the live grants (id, start, end) that
    touch it, directly or through one another; `overlaps` are those it
    overlaps, which is refused.
    """

    start: datetime.datetime
    end: datetime.datetime
    window: tuple[datetime.datetime, datetime.datetime]
    joined: tuple[Window, ...] = ()
    overlaps: tuple[Window, ...] = ()

    @property
    def length(self) -> datetime.timedelta:
        return self.end - self.start

    @classmethod
    def alone(cls, start: datetime.datetime, duration: datetime.timedelta) -> Span:
        return cls(start=start, end=start + duration, window=(start, start + duration))


def live_windows(user, profile: AccessProfile, *, now: datetime.datetime) -> list[Window]:
    """Return (grant id, start, end) of `user`'s scheduled and active grants of `profile` that have not ended."""
    found = []
    live = Grant.objects.filter(user=user, profile=profile, status__in=[Grant.Status.SCHEDULED, Grant.Status.ACTIVE])
    for pk, status, not_before, duration, starts_at, expires_at in live.values_list(
        "pk", "status", "not_before", "duration", "starts_at", "expires_at"
    ):
        if status == Grant.Status.ACTIVE:
            start, end = starts_at, expires_at
        elif not_before is not None:
            start, end = not_before, not_before + duration
        else:
            start, end = now, now + duration  # approved, provisioned in a moment
        if end is not None and end > now:
            found.append((pk, start, end))
    return found


def span_of(
    user,
    profile: AccessProfile,
    start: datetime.datetime,
    end: datetime.datetime,
    *,
    now: datetime.datetime,
    extends: int | None = None,
) -> Span:
    """Return the span that new access [start, end) makes with `user`'s live grants of `profile`.

    Grants at most JIT_SPAN_GAP apart count as touching: a gap of a second
    must not turn one long stretch into many short ones. `extends`: the grant
    an extension lengthens, which the new time joins rather than overlaps.
    """
    gap = datetime.timedelta(seconds=settings.JIT_SPAN_GAP)
    live = live_windows(user, profile, now=now)
    overlaps = tuple(w for w in live if w[0] != extends and w[1] < end and start < w[2])
    joined, lo, hi = [], start, end
    # Grow the stretch around the new window until no other grant is within the gap of it.
    rest = sorted(live, key=lambda w: w[1])
    grew = True
    while grew:
        grew = False
        for w in list(rest):
            if w[1] <= hi + gap and lo <= w[2] + gap:
                joined.append(w)
                rest.remove(w)
                lo, hi, grew = min(lo, w[1]), max(hi, w[2]), True
    joined.sort(key=lambda w: w[1])
    return Span(start=lo, end=hi, window=(start, end), joined=tuple(joined), overlaps=overlaps)


def _when(value: datetime.datetime) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M")


def span_problem(span: Span, maximum: datetime.timedelta, *, title: str, whose: str, subject: str) -> str | None:
    """Return what is wrong with a span, as a clause (it overlaps a live grant, or is longer than `maximum`), or None.

    `whose` names the holder ("your", "ana's"); `subject` the new access ("this window", "it").
    """
    if span.overlaps:
        pk, start, end = span.overlaps[0]
        return f"{subject} overlaps {whose} access to {title} from {_when(start)} to {_when(end)} (grant #{pk})"
    if span.length <= maximum:
        return None
    if not span.joined:
        return f"the longest {title} allows is {human_duration(maximum)}"
    gap = human_duration(datetime.timedelta(seconds=settings.JIT_SPAN_GAP))
    first, last = span.joined[0][1], max(w[2] for w in span.joined)
    return (
        f"with {whose} access to {title} from {_when(first)} to {_when(last)}, {subject} makes "
        f"{human_duration(span.length)} in a row (grants at most {gap} apart count as one); "
        f"{title} allows {human_duration(maximum)} in all"
    )


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


def _in_business_hours(spec: dict, start: datetime.datetime, end: datetime.datetime) -> bool:
    """Return whether every moment of [start, end) lies within one day's business hours."""
    tz = zoneinfo.ZoneInfo(spec.get("tz", "UTC"))
    local = start.astimezone(tz)
    opens = datetime.time.fromisoformat(spec.get("start", "09:00"))
    closes = datetime.time.fromisoformat(spec.get("end", "17:00"))
    if local.weekday() not in spec.get("days", [0, 1, 2, 3, 4]) or not opens <= local.time() < closes:
        return False
    return end <= datetime.datetime.combine(local.date(), closes, tzinfo=tz)


def rule_matches(rule: dict, *, groups: set[str], ticket: str, span: Span) -> bool:
    """Return whether a request meets every condition of one auto-approval rule.

    `max_duration` is judged against the whole span (so touching windows
    cannot chain past it); business hours against every moment of the new
    window (the rest of the span was judged when it was approved).
    """
    if "groups" in rule and not groups & set(rule["groups"]):
        return False
    if "max_duration" in rule and span.length > datetime.timedelta(seconds=int(rule["max_duration"])):
        return False
    if "business_hours" in rule and not _in_business_hours(rule["business_hours"], *span.window):
        return False
    if "ticket_pattern" in rule and not re.fullmatch(rule["ticket_pattern"], ticket or ""):
        return False
    return True


def auto_approval_rule(access_request: AccessRequest, *, span: Span) -> str | None:
    """Return the name of the first rule of the profile's policy that approves this request's span, or None."""
    profile = access_request.profile
    if not profile.policy_id:
        return None
    groups = group_names(access_request.requester)
    for index, rule in enumerate(profile.policy.auto_approve or []):
        if rule_matches(rule, groups=groups, ticket=access_request.ticket, span=span):
            return rule.get("name") or f"rule {index + 1}"
    return None


# How a request was decided ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One way a request ends; `break_glass` and `by_person` None: either."""

    name: str
    label: str
    status: str
    break_glass: bool | None = None
    by_person: bool | None = None


# The one definition of a decision's outcome: the Decisions and access-history reports, the day tallies, the
# timeline and the metrics all read it. The outcomes exclude each other. A break-glass request is approved
# without a person, like a policy rule's, but it is break-glass, never "approved by a policy rule".
_RS = AccessRequest.Status
DECISION_OUTCOMES = (
    Outcome("approved", "Approved by a person", _RS.APPROVED, break_glass=False, by_person=True),
    Outcome("auto_approved", "Approved by a policy rule", _RS.APPROVED, break_glass=False, by_person=False),
    Outcome("break_glass", "Break-glass", _RS.APPROVED, break_glass=True),
    Outcome("denied", "Denied", _RS.DENIED),
    Outcome("lapsed", "Lapsed: nobody decided in time", _RS.LAPSED),
    Outcome("cancelled", "Cancelled", _RS.CANCELLED),
)
_OUTCOMES = {outcome.name: outcome for outcome in DECISION_OUTCOMES}


def decision_outcome(access_request: AccessRequest) -> str:
    """Return how `access_request` was decided: the name of one of DECISION_OUTCOMES, or its status while pending."""
    for outcome in DECISION_OUTCOMES:
        if (
            access_request.status == outcome.status
            and outcome.break_glass in (None, access_request.break_glass)
            and outcome.by_person in (None, access_request.decided_by_id is not None)
        ):
            return outcome.name
    return access_request.status


def decision_outcome_filter(name: str, *, prefix: str = "") -> Q:
    """Return the condition that requests (at `prefix`, e.g. "request__" from a grant) ended as outcome `name`."""
    outcome = _OUTCOMES[name]
    condition = Q(**{f"{prefix}status": outcome.status})
    if outcome.break_glass is not None:
        condition &= Q(**{f"{prefix}break_glass": outcome.break_glass})
    if outcome.by_person is not None:
        condition &= Q(**{f"{prefix}decided_by__isnull": not outcome.by_person})
    return condition


def decision_outcome_expression(*, prefix: str = "", then: dict | None = None) -> Case:
    """Return the database's `decision_outcome` of requests (at `prefix`): the outcome's name, or `then[name]`."""
    then = then or {}
    return Case(
        *[
            When(decision_outcome_filter(o.name, prefix=prefix), then=then.get(o.name, Value(o.name)))
            for o in DECISION_OUTCOMES
        ],
        default=F(f"{prefix}status"),
        output_field=CharField(),
    )
