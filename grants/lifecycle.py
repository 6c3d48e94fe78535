"""Every change of state of a request or a grant, and nothing else writes `status`.

Each function runs in one transaction, re-reads its row with
`select_for_update()`, checks the `ALLOWED` tables below and the rules,
saves, and writes its audit event in the same transaction. Work on a
target runs in tasks after commit (see `grants/tasks.py`).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import uuid

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

import audit
from accounts.stepup import StepUp

from . import activity, events, oncall, policy, sealing, tallies
from .connectors import ConnectorError, get_connector
from .durations import human_duration
from .models import (
    AccessProfile,
    AccessRequest,
    Approval,
    BreakGlassReview,
    Delegation,
    DriftFinding,
    Grant,
    OnCallSchedule,
    StepAssignee,
)

log = logging.getLogger(__name__)

RS = AccessRequest.Status
GS = Grant.Status

ALLOWED_REQUEST = {
    RS.PENDING: {RS.APPROVED, RS.DENIED, RS.CANCELLED, RS.LAPSED},
}
# Provisioning happens under the grant's row lock in one transaction, so a
# crash halfway rolls back to `scheduled` and the sweeper tries again; no
# row is ever left "provisioning".
ALLOWED_GRANT = {
    GS.SCHEDULED: {GS.ACTIVE, GS.FAILED, GS.REVOKING},
    GS.ACTIVE: {GS.REVOKING},
    GS.REVOKING: {GS.REVOKED},
}

MAX_JUSTIFICATION = 2000
MAX_SCHEDULE_AHEAD = datetime.timedelta(days=90)
MAX_PROVISION_ATTEMPTS = 3
# Target work handed to a task right away (provisioning after approval, a
# revocation, an extension) is due again this long after, should that task
# be lost with its worker or meet the row locked by another one: the expiry
# timer reads `next_attempt_at` and enqueues a pass then.
RETRY_GRACE = datetime.timedelta(seconds=3)


class TransitionError(Exception):
    """The row is not in a state that allows this (stale page, double click, illegal move)."""


class IneligibleError(TransitionError):
    """The request or grant may no longer be given: the profile is disabled, the person may no longer ask for it,
    their account is deactivated, or the span it would make breaks a limit. A decision can still deny it."""


class NotAllowedError(Exception):
    """The actor may not do this."""


class StepUpRequiredError(NotAllowedError):
    """The profile's risk needs a fresh sign-in for this, in the portal's pages (policy.step_up_refusal)."""


class InvalidRequestError(Exception):
    """The input breaks a rule; `errors` maps a form field (or None) to what to fix."""

    def __init__(self, errors: dict[str | None, str]):
        super().__init__("; ".join(errors.values()))
        self.errors = errors


def _check(obj, table, new_status):
    if new_status not in table.get(obj.status, set()):
        raise TransitionError(
            f"{obj._meta.verbose_name.capitalize()} #{obj.pk} is {obj.get_status_display().lower()}; "
            f"it cannot become {new_status}."
        )


# The only two places that write `status` (a test holds every other line of
# this module to it): each checks the move against its table first.


def _transition(obj, table, new_status, *, save=(), **changes):
    """Move a locked row to `new_status` if `table` allows it, with `changes`; save them and the `save` fields."""
    _check(obj, table, new_status)
    obj.status = new_status
    for field, value in changes.items():
        setattr(obj, field, value)
    obj.save(update_fields=["status", *changes, *save])


def _transition_many(objs: list, table, new_status, **changes):
    """Move locked rows of one model to `new_status` in one UPDATE, each checked against `table` first."""
    for obj in objs:
        _check(obj, table, new_status)
    if not objs:
        return
    type(objs[0]).objects.filter(pk__in=[obj.pk for obj in objs]).update(status=new_status, **changes)
    for obj in objs:
        obj.status = new_status
        for field, value in changes.items():
            setattr(obj, field, value)


def _close_request(
    req: AccessRequest, new_status, *, actor=None, comment: str | None = None, rule: str | None = None, now=None
):
    """Record a pending request's outcome: status, when, and (if given) by whom, with what comment, by which rule."""
    changes = {"decided_at": now or timezone.now()}
    if actor is not None:
        changes["decided_by"] = actor
    if comment is not None:
        changes["decision_comment"] = comment
    if rule is not None:
        changes["auto_rule"] = rule
    _transition(req, ALLOWED_REQUEST, new_status, **changes)


def _requests_locked(*, skip_locked: bool = False):
    """Return requests to lock FOR UPDATE (their own rows only), with the rows every transition of theirs reads."""
    return AccessRequest.objects.select_for_update(skip_locked=skip_locked, of=("self",)).select_related(
        "profile__target", "profile__policy", "requester"
    )


# One lock order everywhere: a grant's row, then the audit chain (every
# audit.record takes the chain's lock). A worker moving a grant on its target
# holds the row and then appends; anything that appended first and locked the
# row after would deadlock with it. These helpers lock only the grant's own
# row (`of=self`), never its profile's, target's or user's.
_GRANT_RELATED = ("profile__target", "profile__policy", "user", "request")


def _grants_locked(*, skip_locked: bool = False):
    """Return grants to lock FOR UPDATE (their own rows only), with the rows every transition of theirs reads."""
    return Grant.objects.select_for_update(skip_locked=skip_locked, of=("self",)).select_related(*_GRANT_RELATED)


def _locked_grant(grant_id) -> Grant:
    """Return grant `grant_id` locked FOR UPDATE, waiting for whoever holds it (Grant.DoesNotExist if there is none)."""
    return _grants_locked().get(pk=grant_id)


def _claimed_grant(grant_id, **state) -> Grant | None:
    """Return grant `grant_id` locked FOR UPDATE if it is in `state` (status=...) and free, else None (skip_locked)."""
    return _grants_locked(skip_locked=True).filter(pk=grant_id, **state).first()


def _snapshot(profile: AccessProfile, user) -> dict:
    # Denormalised so the trail reads on its own even after renames.
    return {"profile": profile.name, "target": profile.target.name, "user": user.username}


def _sentence(clause: str) -> str:
    return f"{clause[:1].upper()}{clause[1:]}."


def _moved_target(access_request: AccessRequest) -> str | None:
    # A connector provisions on the profile's target; one that moved since
    # submission is not what was asked for (or approved).
    if access_request.target_id is not None and access_request.target_id != access_request.profile.target_id:
        return f"the access profile {access_request.profile.title} now points at another target than the one asked for"
    return None


def _refuse(action: str, *, actor, obj, reason: str, details: dict | None = None, error=NotAllowedError):
    """Record a refused attempt in its own transaction, then raise."""
    audit.record(action, actor=actor, obj=obj, details={"reason": reason, **(details or {})})
    raise error(reason)


# Requests ------------------------------------------------------------------


def _validate(*, requester, profile, duration, justification, ticket, starts_at, now) -> dict:
    errors: dict[str | None, str] = {}
    if not profile.enabled:
        errors["profile"] = "This access profile is disabled; pick another one."
    elif not policy.may_request(requester, profile):
        _refuse("request.refused", actor=requester, obj=profile, reason="You may not request this access profile.")
    if duration is None or duration <= datetime.timedelta(0):
        errors["duration"] = "Choose a duration longer than zero."
    elif duration > profile.max_duration:
        errors["duration"] = f"The longest this profile allows is {human_duration(profile.max_duration)}."
    if len(justification) > MAX_JUSTIFICATION:
        errors["justification"] = (
            f"Keep the justification under {MAX_JUSTIFICATION} characters (it has {len(justification)})."
        )
    if len(ticket) > 100:
        errors["ticket"] = "A ticket reference has at most 100 characters."
    for field, message in policy.justification_errors(profile, justification, ticket).items():
        errors.setdefault(field, message)
    if starts_at is not None:
        if starts_at < now - datetime.timedelta(minutes=1):
            errors["starts_at"] = "The window's start is in the past; leave it empty to start as soon as approved."
        elif starts_at > now + MAX_SCHEDULE_AHEAD:
            errors["starts_at"] = f"Schedule at most {MAX_SCHEDULE_AHEAD.days} days ahead."
    return errors


def submit_request(
    *,
    requester,
    profile: AccessProfile,
    duration: datetime.timedelta,
    justification: str,
    ticket: str = "",
    starts_at: datetime.datetime | None = None,
    break_glass: bool = False,
    bundle=None,
    params: dict | None = None,
    step_up: StepUp | None = None,
    channel: str = "web",
    reviewers: list[str] | None = None,
) -> AccessRequest:
    """Ask for `profile` for `duration` (from `starts_at`, or as soon as approved).

    The profile's policy may approve it at once (an auto-approval rule), or
    `break_glass` may, for its designated groups (a risky profile's needs
    `step_up`, see policy.step_up_refusal). Raise InvalidRequestError or
    NotAllowedError (StepUpRequiredError).
    """
    justification = (justification or "").strip()
    ticket = (ticket or "").strip()
    now = timezone.now()
    errors = _validate(
        requester=requester,
        profile=profile,
        duration=duration,
        justification=justification,
        ticket=ticket,
        starts_at=starts_at,
        now=now,
    )
    try:
        params = get_connector(profile.target).clean_params(params or {})
    except ValueError as exc:
        errors.update(exc.args[0])
    except ConnectorError as exc:
        errors["profile"] = exc.message
    if break_glass and not errors and not policy.may_break_glass(requester, profile):
        _refuse(
            "request.break_glass_refused",
            actor=requester,
            obj=profile,
            reason="You may not use break-glass access for this profile.",
        )
    if break_glass and not errors:
        _check_step_up(
            [profile],
            action="break_glass",
            actor=requester,
            obj=profile,
            channel=channel,
            step_up=step_up,
            event="request.break_glass_refused",
        )
    if errors:
        raise InvalidRequestError(errors)

    with transaction.atomic():
        # Lock the requester's row so that a double submission (two tabs, a
        # double click) is decided one after the other and finds the first.
        get_user_model().objects.select_for_update().filter(pk=requester.pk).first()
        if AccessRequest.objects.filter(requester=requester, profile=profile, status=RS.PENDING, extends=None).exists():
            raise InvalidRequestError({None: f"You already have a pending request for {profile.title}."})
        starts_at = starts_at if starts_at is not None and starts_at > now else None
        # Live and scheduled grants of the profile that this one touches count
        # with it, so that back-to-back windows cannot chain past a limit.
        start = starts_at or now
        span = policy.span_of(requester, profile, start, start + duration, now=now)
        if span.overlaps and starts_at is None and span.overlaps[0][1] <= now:
            held = f"You already hold {profile.title}; release it, extend it, or wait for it to end."
            raise InvalidRequestError({None: held})
        problem = policy.span_problem(
            span,
            profile.max_duration,
            title=profile.title,
            whose="your",
            subject="this window" if starts_at else "this request",
        )
        if problem:
            raise InvalidRequestError({"starts_at" if span.overlaps else "duration": _sentence(problem)})
        req = AccessRequest.objects.create(
            requester=requester,
            profile=profile,
            duration=duration,
            justification=justification,
            ticket=ticket,
            starts_at=starts_at,
            break_glass=break_glass,
            bundle=bundle,
            params=params,
            reviewers=list(dict.fromkeys(reviewers or [])),
            scope=profile.scope,
            max_duration=profile.max_duration,
            target=profile.target,
        )
        audit.record(
            "request.submitted",
            actor=requester,
            obj=req,
            details={
                **_snapshot(profile, requester),
                "duration_seconds": int(duration.total_seconds()),
                "justification": justification,
                "ticket": ticket,
                "starts_at": req.starts_at,
                "break_glass": break_glass,
                "bundle": bundle,
                "scope": req.scope,
                "reviewers": req.reviewers,
            },
        )
        if break_glass:
            _approve_by_policy(
                req,
                rule="break-glass",
                event="request.break_glass",
                extra=policy.step_up_details([profile], channel=channel, step_up=step_up),
            )
            review = BreakGlassReview.objects.create(request=req)
            audit.record("review.opened", obj=review, details={**_snapshot(profile, requester), "request": req.pk})
            events.announce("break_glass_used", request_id=req.pk)
        else:
            rule = policy.auto_approval_rule(req, span=span)
            if rule:
                _approve_by_policy(req, rule=rule, event="request.auto_approved")
            else:
                _open_step(req)
                _check_reviewers(req)
    return req


def _check_reviewers(req: AccessRequest):
    """Refuse suggested reviewers who may not decide a step of the request (the whole submission rolls back)."""
    User = get_user_model()
    for username in req.reviewers:
        user = User.objects.filter(username=username, is_active=True).first()
        if user is None or user.pk == req.requester_id or not policy.is_approver(user, req):
            raise InvalidRequestError(
                {"reviewers": f"{username} is not an approver of {req.profile.title}; suggest one who is."}
            )


def submit_bundle(*, requester, profiles, **kwargs) -> list[AccessRequest]:
    """Ask for several profiles at once; they are decided together and each becomes its own grant."""
    profiles = list(dict.fromkeys(profiles))
    if len(profiles) < 2:
        return [submit_request(requester=requester, profile=p, **kwargs) for p in profiles]
    # Refusals are recorded before the bundle's transaction, which would
    # roll their audit events back with everything else.
    for profile in profiles:
        if profile.enabled and not policy.may_request(requester, profile):
            _refuse("request.refused", actor=requester, obj=profile, reason=f"You may not request {profile.title}.")
        if kwargs.get("break_glass") and profile.enabled and not policy.may_break_glass(requester, profile):
            _refuse(
                "request.break_glass_refused",
                actor=requester,
                obj=profile,
                reason=f"You may not use break-glass access for {profile.title}.",
            )
    if kwargs.get("break_glass"):
        _check_step_up(
            profiles,
            action="break_glass",
            actor=requester,
            obj=profiles[0],
            channel=kwargs.get("channel", "web"),
            step_up=kwargs.get("step_up"),
            event="request.break_glass_refused",
        )
    bundle = uuid.uuid4()
    with transaction.atomic():
        return [submit_request(requester=requester, profile=p, bundle=bundle, **kwargs) for p in profiles]


def request_extension(grant_id, *, actor, duration: datetime.timedelta, justification: str) -> AccessRequest:
    """Ask for more time on one's own active grant; the profile's policy decides as for any request."""
    justification = (justification or "").strip()
    if not Grant.objects.filter(pk=grant_id, user=actor).exists():
        _refuse(
            "grant.extend_refused",
            actor=actor,
            obj=Grant.objects.get(pk=grant_id),
            reason="Only the holder can extend a grant.",
        )
    with transaction.atomic():
        # The holder's row first, as submit_request and the decisions take it,
        # so that one person's span changes one step at a time.
        get_user_model().objects.select_for_update().filter(pk=actor.pk).first()
        grant = _locked_grant(grant_id)
        if not grant.is_active:
            raise TransitionError("Only active access can be extended.")
        if not get_connector(grant.profile.target).extends_in_place:
            raise TransitionError(
                f"{grant.profile.target} ({grant.profile.target.kind}) cannot move an expiry in place; request "
                "new access when this one ends."
            )
        why = policy.ineligibility(grant.user, grant.profile) or _moved_target(grant.request)
        if why:
            raise IneligibleError(f"This access cannot be extended: {why}.")
        errors = {}
        maximum = policy.max_duration(grant.request)
        span = None
        if duration is None or duration <= datetime.timedelta(0):
            errors["duration"] = "Choose a duration longer than zero."
        else:
            start, end = grant.expires_at, grant.expires_at + duration
            span = policy.span_of(grant.user, grant.profile, start, end, now=timezone.now(), extends=grant.pk)
            if span.overlaps:
                title = grant.profile.title
                problem = policy.span_problem(span, maximum, title=title, whose="your", subject="this extension")
                errors["duration"] = _sentence(problem)
            elif span.length > maximum:
                left = maximum - (span.length - duration)
                counting = "" if len(span.joined) < 2 else ", counting your other access to it that this touches"
                errors["duration"] = (
                    f"This profile allows {human_duration(maximum)} in all{counting}; "
                    f"you can add at most {human_duration(max(left, datetime.timedelta(0)))}."
                )
        for field, message in policy.justification_errors(grant.profile, justification, grant.request.ticket).items():
            if field == "justification":
                errors[field] = message
        if len(justification) > MAX_JUSTIFICATION:
            errors["justification"] = f"Keep the justification under {MAX_JUSTIFICATION} characters."
        if AccessRequest.objects.filter(extends=grant, status=RS.PENDING).exists():
            errors[None] = "An extension of this access is already waiting for a decision."
        if errors:
            raise InvalidRequestError(errors)
        # An extension gives more time on what was approved, not what the profile says today.
        req = AccessRequest.objects.create(
            requester=actor,
            profile=grant.profile,
            duration=duration,
            justification=justification,
            ticket=grant.request.ticket,
            extends=grant,
            scope=grant.scope,
            max_duration=maximum,
            target_id=grant.request.target_id or grant.profile.target_id,
        )
        audit.record(
            "request.submitted",
            actor=actor,
            obj=req,
            details={
                **_snapshot(grant.profile, actor),
                "extends": grant.pk,
                "duration_seconds": int(duration.total_seconds()),
                "justification": justification,
                "scope": req.scope,
            },
        )
        rule = policy.auto_approval_rule(req, span=span)
        if rule:
            _approve_by_policy(req, rule=rule, event="request.auto_approved")
        else:
            _open_step(req)
    return req


def _ask_on_call(req: AccessRequest, schedule_name: str, *, index: int, fallback: bool, now) -> dict:
    """Resolve who `schedule_name` has on call now, record them as asked for step `index`; return the trail's facts."""
    schedule = OnCallSchedule.objects.filter(name=schedule_name).first()
    found = (
        oncall.on_call(schedule, at=now)
        if schedule
        else oncall.OnCall(None, f"there is no on-call schedule {schedule_name}")
    )
    user, why = found.user, found.why
    if user is not None and user.pk == req.requester_id:
        user, why = None, f"{why}; that is {req.requester.username}, who asked, so nobody else is asked by it"
    if user is not None:
        StepAssignee.objects.get_or_create(
            request=req,
            step=index,
            user=user,
            fallback=fallback,
            defaults={"schedule": schedule_name, "why": why[:500], "created_at": now},
        )
    return {"schedule": schedule_name, "on_call": user.username if user else None, "why": why}


def _open_step(req: AccessRequest):
    """Open the step the request waits for: ask whoever is on call if it names a schedule, then tell its approvers."""
    now = timezone.now()
    index, step = policy.current_step(req), policy.waiting_step(req)
    req.step_opened_at, req.reminded_at, req.escalated_at = now, None, None
    req.save(update_fields=["step_opened_at", "reminded_at", "escalated_at"])
    if step.schedule:
        facts = _ask_on_call(req, step.schedule, index=index, fallback=False, now=now)
        details = {**_snapshot(req.profile, req.requester), "step": index + 1, **facts}
        audit.record("request.on_call", obj=req, details=details)
    events.announce("approval_needed", request_id=req.pk)


def remind_and_escalate(now=None) -> tuple[list[int], list[int]]:
    """Remind the approvers of steps undecided for their `remind_after`, escalate those past `escalate_after`.

    Escalation asks the step's own schedule again (the shift may have
    changed) and the fallback (a group, or whoever its schedule has on call);
    the step's first approvers may still decide. Each request moves once per
    step: the marks are cleared when the next step opens. Return the ids
    reminded and escalated.
    """
    now = now or timezone.now()
    reminded, escalated = [], []
    # Feeds are read over the network here, before any lock; under the locks only from the cache.
    oncall.refresh_feeds(now=now)
    with transaction.atomic(), oncall.cached_feeds_only():
        pending = _requests_locked(skip_locked=True).filter(status=RS.PENDING, escalated_at=None)
        for req in pending:
            # A policy shortened under the request: it waits for (and escalates) the last step.
            index, step = policy.current_step(req), policy.waiting_step(req)
            opened = req.step_opened_at or req.created_at
            base = {**_snapshot(req.profile, req.requester), "step": index + 1}
            if (
                step.escalate_after
                and now >= opened + step.escalate_after
                and (step.fallback_group or step.fallback_schedule)
            ):
                asked = []
                if step.schedule:
                    asked.append(_ask_on_call(req, step.schedule, index=index, fallback=False, now=now))
                if step.fallback_schedule:
                    asked.append(_ask_on_call(req, step.fallback_schedule, index=index, fallback=True, now=now))
                req.escalated_at, req.reminded_at = now, req.reminded_at or now
                req.save(update_fields=["escalated_at", "reminded_at"])
                audit.record(
                    "request.escalated",
                    obj=req,
                    details={
                        **base,
                        "after": human_duration(now - opened),
                        "fallback": step.describe_fallback(),
                        "asked": asked,
                    },
                )
                events.announce("approval_escalated", request_id=req.pk)
                escalated.append(req.pk)
            elif step.remind_after and req.reminded_at is None and now >= opened + step.remind_after:
                req.reminded_at = now
                req.save(update_fields=["reminded_at"])
                audit.record("request.reminded", obj=req, details={**base, "after": human_duration(now - opened)})
                events.announce("approval_reminder", request_id=req.pk)
                reminded.append(req.pk)
    return reminded, escalated


def _lock_request(request_id) -> AccessRequest:
    return _requests_locked().get(pk=request_id)


def _finish_approval(req: AccessRequest, *, actor):
    """Make what an approved request grants: a scheduled grant, or more time on the grant it extends."""
    if req.extends_id:
        _extend_grant(req, actor=actor)
        return
    grant = Grant.objects.create(
        request=req, user=req.requester, profile=req.profile, duration=req.duration, not_before=req.starts_at
    )
    audit.record(
        "grant.scheduled",
        actor=actor,
        obj=grant,
        details={**_snapshot(req.profile, req.requester), "request": req.pk, "not_before": req.starts_at},
    )
    transaction.on_commit(lambda: _enqueue("grants.tasks.provision", grant.pk))


def _step_up_facts(channel: str, step_up: StepUp | None) -> dict:
    """Return what a refusal for want of a step-up records: the channel, and the step-up that was not enough."""
    return {"channel": channel, **({"step_up": step_up.details()} if step_up else {})}


def _check_step_up(profiles, *, action: str, actor, obj, channel: str, step_up, event: str):
    """Refuse (recorded, StepUpRequiredError) an action a risky profile needs a fresh sign-in for."""
    reason = policy.step_up_refusal(profiles, action=action, channel=channel, step_up=step_up)
    if reason:
        _refuse(
            event,
            actor=actor,
            obj=obj,
            reason=reason,
            error=StepUpRequiredError,
            details={"step_up_needed": action, **_step_up_facts(channel, step_up)},
        )


def _approve_by_policy(req: AccessRequest, *, rule: str, event: str, extra: dict | None = None):
    _close_request(req, RS.APPROVED, rule=rule)
    details = {**_snapshot(req.profile, req.requester), "rule": rule, "scope": req.effective_scope, **(extra or {})}
    audit.record(event, obj=req, details=details)
    tallies.add(req)
    events.announce("request_decided", request_id=req.pk)
    _finish_approval(req, actor=None)


def _approve_step(req: AccessRequest, *, actor, comment: str, extra: dict):
    steps = policy.steps_for(req.profile)
    index = policy.current_step(req)
    if index != req.step:
        # The policy lost steps since the request reached this one: it waits for the last step now.
        req.step = index
        req.save(update_fields=["step"])
    principal = policy.on_behalf_of(actor, req)
    Approval.objects.create(request=req, step=index, approver=actor, on_behalf_of=principal, comment=comment)
    done = policy.approvals_counted(req, index)
    details = {
        **_snapshot(req.profile, req.requester),
        "comment": comment,
        "step": index + 1,
        "steps": len(steps),
        "scope": req.effective_scope,
        **extra,
        **({"on_behalf_of": principal.username} if principal else {}),
    }
    if done < steps[index].count or index + 1 < len(steps):
        if done >= steps[index].count:
            req.step += 1
            req.save(update_fields=["step"])
            _open_step(req)
        audit.record("request.step_approved", actor=actor, obj=req, details=details)
        return
    _close_request(req, RS.APPROVED, actor=actor, comment=comment)
    audit.record("request.approved", actor=actor, obj=req, details=details)
    tallies.add(req)
    events.announce("request_decided", request_id=req.pk)
    _finish_approval(req, actor=actor)


def _deny(req: AccessRequest, *, actor, comment: str):
    _close_request(req, RS.DENIED, actor=actor, comment=comment)
    principal = policy.on_behalf_of(actor, req)
    details = {
        **_snapshot(req.profile, req.requester),
        "comment": comment,
        "step": policy.current_step(req) + 1,
        **({"on_behalf_of": principal.username} if principal else {}),
    }
    audit.record("request.denied", actor=actor, obj=req, details=details)
    tallies.add(req)
    events.announce("request_decided", request_id=req.pk)


def _lock_decision(request_id, *, approve: bool) -> tuple[AccessRequest, list[AccessRequest]]:
    """Lock the request and, for a bundle, all its members; return it and the members to decide (it first)."""
    requester_id, bundle = AccessRequest.objects.values_list("requester", "bundle").get(pk=request_id)
    if approve:
        # An approval judges the requester's other access (their span): their
        # row is locked first, as submissions, extensions and deactivation
        # lock it, so that all of them queue in one order.
        get_user_model().objects.select_for_update().filter(pk=requester_id).first()
    if bundle is None:
        req = _lock_request(request_id)
        return req, [req]
    # A bundle is decided once. All its members in one statement, in id
    # order: two approvers deciding different members at once queue on the
    # first one, instead of each holding a member the other waits for.
    locked = list(_requests_locked().filter(bundle=bundle).order_by("pk"))
    req = next(m for m in locked if m.pk == request_id)
    return req, [req] + [m for m in locked if m.pk != req.pk and m.status == RS.PENDING]


def _lock_extended_grants(members: list[AccessRequest]) -> None:
    # Before any audit append of the decision (see _grants_locked).
    extended = sorted(m.extends_id for m in members if m.extends_id)
    if extended:
        list(_grants_locked().filter(pk__in=extended).order_by("pk").values_list("pk", flat=True))


def _approval_problem(req: AccessRequest, *, now) -> str | None:
    """Return why the request cannot be approved now (eligibility, target, span), as a clause, or None."""
    why = policy.ineligibility(req.requester, req.profile) or _moved_target(req)
    if why:
        return why
    if req.extends_id:
        grant = Grant.objects.get(pk=req.extends_id)
        if not grant.is_active:
            return None  # _extend_grant says so
        start, end, extends = grant.expires_at, grant.expires_at + req.duration, grant.pk
    else:
        start = req.starts_at if req.starts_at and req.starts_at > now else now
        end, extends = start + req.duration, None
    span = policy.span_of(req.requester, req.profile, start, end, now=now, extends=extends)
    whose = f"{req.requester.username}'s"
    return policy.span_problem(span, policy.max_duration(req), title=req.profile.title, whose=whose, subject="it")


def _decide(
    request_id, *, actor, comment: str, approve: bool, step: int | None, step_up, channel: str
) -> AccessRequest:
    comment = (comment or "").strip()
    event, error = "request.decision_refused", NotAllowedError
    with transaction.atomic():
        req, members = _lock_decision(request_id, approve=approve)
        _lock_extended_grants(members)
        if (
            step is not None
            and req.status == RS.PENDING
            and step != req.step
            and req.requester_id != actor.pk
            and policy.is_approver(actor, req)
        ):
            # A stale page (a double click, a colleague was quicker): not a refusal. `step` is the stored
            # `req.step` the page or Slack message was made from, compared as stored; it is shown clamped.
            moved = policy.current_step(req) + 1
            raise TransitionError(f"Request #{req.pk} has moved on to step {moved} since you looked; nothing changed.")
        refusal = policy.approval_refusal(actor, req)
        if refusal is None:
            _check(req, ALLOWED_REQUEST, RS.APPROVED if approve else RS.DENIED)
            members = [m for m in members if m is req or policy.may_decide(actor, m)]
            profiles = [m.profile for m in members]
            if approve:
                refusal = policy.step_up_refusal(profiles, action="approve", channel=channel, step_up=step_up)
                event, error = "request.step_up_refused", StepUpRequiredError
        if refusal is None:
            extra = policy.step_up_details(profiles, channel=channel, step_up=step_up) if approve else {}
            if approve:
                # Eligibility and limits again, as they are now: the profile, the
                # person's groups or account, or their other access may have
                # changed since submission.
                now = timezone.now()
                for member in members:
                    problem = _approval_problem(member, now=now)
                    if problem:
                        raise IneligibleError(
                            f"Request #{member.pk} cannot be approved now: {problem}. You can still deny it."
                        )
            for member in members:
                if approve:
                    _approve_step(member, actor=actor, comment=comment, extra=extra)
                else:
                    _deny(member, actor=actor, comment=comment)
            return req
    # Refused: the lock is released; the attempt is recorded on its own so
    # that it survives the error we raise.
    details = {**_snapshot(req.profile, req.requester), "attempted": "approved" if approve else "denied"}
    if error is StepUpRequiredError:
        details.update(_step_up_facts(channel, step_up))
    _refuse(event, actor=actor, obj=req, reason=refusal, details=details, error=error)


def approve_request(
    request_id,
    *,
    actor,
    comment: str = "",
    step: int | None = None,
    step_up: StepUp | None = None,
    channel: str = "web",
) -> AccessRequest:
    """Approve the current step of a pending request (and of its bundle); the last step schedules the grant.

    `step` is the step the approver was shown: if the request has moved on
    meanwhile, nothing changes and TransitionError says so. A risky profile
    needs the approver's `step_up` through `channel` (policy.step_up_refusal),
    else StepUpRequiredError.
    """
    return _decide(request_id, actor=actor, comment=comment, approve=True, step=step, step_up=step_up, channel=channel)


def deny_request(request_id, *, actor, comment: str = "", step: int | None = None) -> AccessRequest:
    """Deny a pending request (and its bundle) at its current step."""
    return _decide(request_id, actor=actor, comment=comment, approve=False, step=step, step_up=None, channel="web")


def cancel_request(request_id, *, actor) -> AccessRequest:
    """Withdraw one's own pending request."""
    with transaction.atomic():
        req = _lock_request(request_id)
        if req.requester_id != actor.pk:
            raise NotAllowedError("Only the requester can cancel a request.")
        _close_request(req, RS.CANCELLED)
        audit.record("request.cancelled", actor=actor, obj=req, details=_snapshot(req.profile, req.requester))
        tallies.add(req)
    return req


def lapse_stale_requests(now=None) -> int:
    """Lapse pending requests nobody decided within their policy's timeout, or whose window has ended."""
    now = now or timezone.now()
    count = 0
    with transaction.atomic():
        for req in _requests_locked(skip_locked=True).filter(status=RS.PENDING):
            timed_out = req.created_at + policy.request_timeout(req.profile) < now
            window_over = req.starts_at is not None and req.starts_at + req.duration <= now
            if not (timed_out or window_over):
                continue
            _close_request(req, RS.LAPSED, now=now)
            audit.record(
                "request.lapsed",
                obj=req,
                details={
                    **_snapshot(req.profile, req.requester),
                    "why": "window ended" if window_over else "nobody decided in time",
                },
            )
            tallies.add(req)
            count += 1
    return count


def close_review(review_id, *, actor, comment: str) -> BreakGlassReview:
    """Close a break-glass review: an approver of the profile, not the person who used it, with a comment."""
    comment = (comment or "").strip()
    with transaction.atomic():
        review = (
            BreakGlassReview.objects.select_for_update(of=("self",))
            .select_related("request__profile__policy", "request__requester")
            .get(pk=review_id)
        )
        req = review.request
        if req.requester_id == actor.pk:
            refusal = "You cannot review your own break-glass use."
        elif not policy.is_approver(actor, req):
            refusal = "Only an approver of this profile can close its review."
        else:
            refusal = None
            if review.closed_at:
                raise TransitionError("This review is already closed.")
            if len(comment) < 10:
                raise InvalidRequestError({"comment": "Say what you checked, in at least 10 characters."})
            review.closed_by, review.closed_at, review.comment = actor, timezone.now(), comment
            review.save(update_fields=["closed_by", "closed_at", "comment"])
            audit.record(
                "review.closed",
                actor=actor,
                obj=review,
                details={**_snapshot(req.profile, req.requester), "request": req.pk, "comment": comment},
            )
            return review
    _refuse("review.close_refused", actor=actor, obj=review, reason=refusal)


# Delegation ----------------------------------------------------------------

MAX_DELEGATION = datetime.timedelta(days=90)


def delegate_approvals(
    *, actor, delegate, starts_at: datetime.datetime, ends_at: datetime.datetime, reason: str = ""
) -> Delegation:
    """Let `delegate` decide, from `starts_at` to `ends_at`, what `actor` could decide (recorded "on behalf of")."""
    now = timezone.now()
    reason = (reason or "").strip()
    errors = {}
    if delegate is None or not delegate.is_active:
        errors["delegate"] = "Name an active portal user."
    elif delegate.pk == actor.pk:
        errors["delegate"] = "You cannot delegate to yourself."
    if ends_at <= starts_at:
        errors["ends_at"] = "The end must be after the start."
    elif ends_at <= now:
        errors["ends_at"] = "The end must be in the future."
    elif ends_at - starts_at > MAX_DELEGATION:
        errors["ends_at"] = f"A delegation lasts at most {human_duration(MAX_DELEGATION)}."
    if len(reason) > 200:
        errors["reason"] = "Say why in at most 200 characters."
    if errors:
        raise InvalidRequestError(errors)
    with transaction.atomic():
        delegation = Delegation.objects.create(
            delegator=actor, delegate=delegate, starts_at=starts_at, ends_at=ends_at, reason=reason
        )
        audit.record(
            "delegation.created",
            actor=actor,
            obj=delegation,
            details={
                "delegator": actor.username,
                "delegate": delegate.username,
                "starts_at": starts_at,
                "ends_at": ends_at,
                "reason": reason,
            },
        )
    return delegation


def end_delegation(delegation_id, *, actor) -> Delegation:
    """End one's own delegation now."""
    with transaction.atomic():
        delegation = Delegation.objects.select_for_update().get(pk=delegation_id)
        if delegation.delegator_id != actor.pk:
            raise NotAllowedError("Only the person who delegated can end the delegation.")
        if delegation.ended_at or delegation.ends_at <= timezone.now():
            raise TransitionError("This delegation has already ended.")
        delegation.ended_at = timezone.now()
        delegation.save(update_fields=["ended_at"])
        audit.record(
            "delegation.ended",
            actor=actor,
            obj=delegation,
            details={"delegator": actor.username, "delegate": delegation.delegate.username},
        )
    return delegation


# Grants --------------------------------------------------------------------


def _enqueue(func: str, *args):
    async_task(func, *args, group=func.rsplit(".", 1)[-1])


def provision_grant(grant_id, *, connectors: dict | None = None) -> Grant | None:
    """Create the access on the target and start the clock; a no-op unless scheduled and due.

    The row lock is held across the connector call: a second worker skips
    the grant, and a revocation waits until provisioning has finished.
    `connectors` ({target id: connector}) lets a pass share one connector,
    and what it remembers of a failed target, across grants.
    """
    with transaction.atomic():
        grant = _claimed_grant(grant_id, status=GS.SCHEDULED)
        if grant is None:
            return None
        now = timezone.now()
        if grant.next_attempt_at and grant.next_attempt_at > now:
            return None
        if grant.not_before and grant.not_before > now:
            return None  # a scheduled window: the timer provisions it at its start
        # Eligibility once more: a window may open months after its approval.
        why = policy.ineligibility(grant.user, grant.profile) or _moved_target(grant.request)
        if why:
            return _fail_unprovisioned(grant, _sentence(f"not provisioned: {why}"), reason="policy")
        if (grant.not_before or now) + grant.duration <= now:
            return _fail_unprovisioned(grant, "The scheduled window ended before the access could be provisioned.")
        # The clock starts now, when the access becomes usable, not when it
        # was asked for; a scheduled window ends where it was planned to.
        grant.starts_at = now
        grant.expires_at = (grant.not_before or now) + grant.duration
        try:
            with _connector(grant.profile.target, connectors) as connector:
                provisioned = connector.provision(grant)
        except ConnectorError as exc:
            return _provision_failed(grant, exc)
        _transition(
            grant,
            ALLOWED_GRANT,
            GS.ACTIVE,
            save=["starts_at"],
            expires_at=provisioned.expires_at,
            external_ref=provisioned.external_ref,
            sealed_credentials=sealing.seal(provisioned.credentials),
            last_error="",
            next_attempt_at=None,
        )
        audit.record(
            "grant.provisioned",
            obj=grant,
            details={
                **_snapshot(grant.profile, grant.user),
                "external_ref": grant.external_ref,
                "starts_at": grant.starts_at,
                "expires_at": grant.expires_at,
            },
        )
        events.announce("grant_provisioned", grant_id=grant.pk)
    return grant


def _connector(target, connectors: dict | None):
    """Return a connector to use in a `with` block: the caller's shared one (left open), or a new one (closed after)."""
    if connectors is None:
        return get_connector(target)
    if target.pk not in connectors:
        connectors[target.pk] = get_connector(target)
    return contextlib.nullcontext(connectors[target.pk])


def _fail_unprovisioned(grant: Grant, message: str, **details) -> Grant:
    """Fail a grant before this attempt made anything on the target; a crashed earlier attempt may have, so clean up."""
    _transition(
        grant, ALLOWED_GRANT, GS.FAILED, last_error=message, starts_at=None, expires_at=None, next_attempt_at=None
    )
    details = {**_snapshot(grant.profile, grant.user), "error": message, **details}
    audit.record("grant.failed", obj=grant, details=details)
    transaction.on_commit(lambda: _enqueue("grants.tasks.clean_up_failed", grant.pk))
    return grant


def _provision_failed(grant: Grant, exc: ConnectorError) -> Grant:
    grant.attempts += 1
    grant.last_error = exc.message
    details = {**_snapshot(grant.profile, grant.user), "error": exc.message, "attempt": grant.attempts}
    if exc.permanent or grant.attempts >= MAX_PROVISION_ATTEMPTS:
        _transition(
            grant,
            ALLOWED_GRANT,
            GS.FAILED,
            save=["attempts", "last_error"],
            starts_at=None,
            expires_at=None,
            next_attempt_at=None,
        )
        audit.record("grant.failed", obj=grant, details=details)
        # Whatever a half-done provisioning left on the target goes too.
        transaction.on_commit(lambda: _enqueue("grants.tasks.clean_up_failed", grant.pk))
    else:
        grant.next_attempt_at = timezone.now() + datetime.timedelta(seconds=10 * 2 ** (grant.attempts - 1))
        grant.save(update_fields=["attempts", "last_error", "next_attempt_at"])
        audit.record("grant.provision_retry", obj=grant, details=details)
    return grant


def _extend_grant(req: AccessRequest, *, actor):
    grant = _locked_grant(req.extends_id)
    if not grant.is_active:
        raise TransitionError(f"Grant #{grant.pk} is no longer active; it cannot be extended.")
    old = grant.expires_at
    grant.expires_at = old + req.duration
    grant.duration = grant.duration + req.duration
    # Due until the target follows (extend_on_target clears it): a lost task is enqueued again by the timer.
    grant.next_attempt_at = timezone.now() + RETRY_GRACE
    grant.save(update_fields=["expires_at", "duration", "next_attempt_at"])
    audit.record(
        "grant.extended",
        actor=actor,
        obj=grant,
        details={
            **_snapshot(grant.profile, grant.user),
            "request": req.pk,
            "from": old,
            "to": grant.expires_at,
            "rule": req.auto_rule,
        },
    )
    # The portal's clock moves first; until the target follows, the target
    # ends access earlier than the portal says, never later.
    transaction.on_commit(lambda: _enqueue("grants.tasks.extend_on_target", grant.pk))


EXTEND_RETRY = datetime.timedelta(seconds=10)


def extend_on_target(grant_id, *, connectors: dict | None = None) -> Grant | None:
    """Move the target's own expiry (e.g. VALID UNTIL) to the grant's new expiry; retried until it has.

    A no-op if the grant is not active or another worker holds it (its
    `next_attempt_at` stays due, so a pass takes it up if that worker dies).
    """
    with transaction.atomic():
        grant = _claimed_grant(grant_id, status=GS.ACTIVE, expires_at__gt=timezone.now())
        if grant is None:
            return None
        try:
            with _connector(grant.profile.target, connectors) as connector:
                connector.extend(grant)
        except ConnectorError as exc:
            grant.last_error = f"Extending on the target failed: {exc.message}"
            grant.next_attempt_at = timezone.now() + EXTEND_RETRY * (6 if exc.permanent else 1)
            grant.save(update_fields=["last_error", "next_attempt_at"])
            audit.record(
                "grant.extend_failed", obj=grant, details={**_snapshot(grant.profile, grant.user), "error": exc.message}
            )
            return grant
        grant.last_error = ""
        grant.next_attempt_at = None
        grant.save(update_fields=["last_error", "next_attempt_at"])
        audit.record(
            "grant.extended_on_target",
            obj=grant,
            details={**_snapshot(grant.profile, grant.user), "expires_at": grant.expires_at},
        )
    return grant


def _begin_changes(*, actor, reason: str, now) -> dict:
    """Return the fields a grant gets as it starts `revoking` (the caller's task revokes at once; if that is lost,
    the timer's pass does after RETRY_GRACE)."""
    return {
        "end_reason": reason,
        "ended_by": actor,
        "revoke_requested_at": now,
        "attempts": 0,
        "next_attempt_at": now + RETRY_GRACE,
        "last_error": "",
        "sealed_credentials": "",
    }


def _revoke_requested_events(grants: list[Grant], *, actor, reason: str):
    return [
        (
            "grant.revoke_requested",
            actor,
            grant,
            {**_snapshot(grant.profile, grant.user), "reason": reason, "expires_at": grant.expires_at},
        )
        for grant in grants
    ]


def _begin_revocations(grants: list[Grant], *, actor, reason: str):
    """Move locked grants to `revoking`: one UPDATE and one audit append, however many."""
    changes = _begin_changes(actor=actor, reason=reason, now=timezone.now())
    _transition_many(grants, ALLOWED_GRANT, GS.REVOKING, **changes)
    audit.record_many(_revoke_requested_events(grants, actor=actor, reason=reason))


def revoke_grant(grant_id, *, actor, reason: str) -> Grant:
    """End a grant before (or at) its expiry; the target work follows in a task.

    `released`: only the holder; `revoked`: staff allowed to change grants;
    `expired` and `policy`: the system (actor None).
    """
    if reason in (Grant.EndReason.EXPIRED, Grant.EndReason.POLICY) and actor is not None:
        raise ValueError(f"{reason!r} revocations are made by the system, not by a person")
    if reason not in Grant.EndReason.values:
        raise ValueError(f"unknown reason {reason!r}")
    with transaction.atomic():
        grant = _locked_grant(grant_id)
        if reason == Grant.EndReason.RELEASED and (actor is None or actor.pk != grant.user_id):
            refusal = "Only the holder can release a grant."
        elif reason == Grant.EndReason.REVOKED and (actor is None or not actor.has_perm("grants.change_grant")):
            refusal = "Only an admin can revoke a grant."
        else:
            refusal = None
            _begin_revocations([grant], actor=actor, reason=reason)
            transaction.on_commit(lambda: _enqueue("grants.tasks.complete_revocation", grant.pk))
            return grant
    _refuse("grant.revoke_refused", actor=actor, obj=grant, reason=refusal, details={"reason": reason})


def begin_due_expiries(*, limit: int, now=None, target_id: int | None = None) -> list[int]:
    """Move up to `limit` grants past their expiry (on one target,
    if given) to `revoking`, oldest first; return their ids.

    Several workers and timers may call this at once: `skip_locked` hands
    each grant to exactly one of them.
    """
    now = now or timezone.now()
    due = _grants_locked(skip_locked=True).filter(status=GS.ACTIVE, expires_at__lte=now)
    if target_id is not None:
        due = due.filter(profile__target_id=target_id)
    with transaction.atomic():
        due = list(due.order_by("expires_at", "pk")[:limit])
        if due:
            _begin_revocations(due, actor=None, reason=Grant.EndReason.EXPIRED)
    return [g.pk for g in due]


# What a batch of expiries reads of each grant (`revoke_due_expiries`): the grant's own columns but the
# credentials it is about to forget, the holder's name and the request's frozen scope; profiles and targets
# are read once per batch, not once per grant.
_EXPIRY_FIELDS = (
    *(f.name for f in Grant._meta.concrete_fields if f.name != "sealed_credentials"),
    "user__username",
    "request__scope",
    "request__params",
    "request__profile",
)


def revoke_due_expiries(*, target_id: int, limit: int, connectors: dict, now=None) -> list[int]:
    """Revoke up to `limit` expired grants of one target, oldest first, in one transaction; return the ids taken.

    One read locks the rows (skip_locked: each due grant goes to exactly one
    caller), one UPDATE moves them to `revoking`, then the target's few round
    trips, one UPDATE to `revoked` for those a fresh read finds gone, and one
    audit append for both changes of every grant. The chain lock is taken
    only after the target has answered, so no target round trip happens
    while it is held. A worker that dies on the way leaves nothing half
    done: the grants are active and past their expiry again (the target
    refuses their logins meanwhile, `VALID UNTIL`), and the next pass takes
    them at once.
    """
    now = now or timezone.now()
    with transaction.atomic():
        due = list(
            Grant.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("user", "request")
            .only(*_EXPIRY_FIELDS)
            .filter(status=GS.ACTIVE, expires_at__lte=now, profile__target_id=target_id)
            .order_by("expires_at", "pk")[:limit]
        )
        if not due:
            return []
        profiles = AccessProfile.objects.select_related("target").in_bulk({g.profile_id for g in due})
        for grant in due:
            grant.profile = grant.request.profile = profiles[grant.profile_id]
        begun = _begin_changes(actor=None, reason=Grant.EndReason.EXPIRED, now=now)
        _transition_many(due, ALLOWED_GRANT, GS.REVOKING, **begun)
        _revoke_on_targets(
            due, connectors, requested=_revoke_requested_events(due, actor=None, reason=Grant.EndReason.EXPIRED)
        )
    return [g.pk for g in due]


def complete_revocation(grant_id, *, connectors: dict | None = None) -> Grant | None:
    """Remove the access on the target, read it again, and only then mark the grant revoked.

    A no-op if the grant is not revoking or is being handled by another
    worker. `connectors` ({target id: connector}) lets a caller reuse one
    connection per target; without it the connection is closed here.
    """
    with transaction.atomic():
        grant = _claimed_grant(grant_id, status=GS.REVOKING)
        if grant is None:
            return None
        own = {} if connectors is None else connectors
        try:
            _revoke_on_targets([grant], own)
        finally:
            if connectors is None:
                for connector in own.values():
                    connector.close()
    return grant


def retry_revocations(*, target_id: int, limit: int, connectors: dict, now=None) -> int:
    """Revoke up to `limit` `revoking` grants of one target whose next attempt is due, longest waiting first.

    Return how many were tried (0: nothing due that another worker does not hold).
    """
    now = now or timezone.now()
    with transaction.atomic():
        grants = list(
            _grants_locked(skip_locked=True)
            .filter(status=GS.REVOKING, next_attempt_at__lte=now, profile__target_id=target_id)
            .order_by("next_attempt_at", "pk")[:limit]
        )
        _revoke_on_targets(grants, connectors)
    return len(grants)


def _revoke_on_targets(grants: list[Grant], connectors: dict, *, requested: list = ()) -> list[Grant]:
    """Revoke locked `revoking` grants, a few round trips per target, and mark revoked those a fresh read finds gone.

    Each target revokes its grants (`revoke_many`) and is read again once
    (`present_many`); a grant still present, or whose target failed, goes
    the retry way of `_revocation_failed`. Every audit event of the batch
    (`requested` first: the revocation requests of grants begun in this
    transaction) is appended once, after the last target call. Returns the
    revoked.
    """
    done = []
    failed: list[tuple[Grant, str, list[dict]]] = []
    appended = list(requested)
    found: dict[int, list[dict]] = {}
    by_target: dict[int, list[Grant]] = {}
    for grant in grants:
        by_target.setdefault(grant.profile.target_id, []).append(grant)
    for target_id, group in by_target.items():
        connector = connectors.get(target_id)
        if connector is None:
            connector = connectors[target_id] = get_connector(group[0].profile.target)
        try:
            errors = connector.revoke_many(group)
            revoked_at = timezone.now()
            present = connector.present_many([g for g in group if g.pk not in errors])
        except ConnectorError as exc:
            failed += [(grant, exc.message, connector.take_inventory(grant.pk)) for grant in group]
            continue
        verified_at = timezone.now()
        gone = []
        for grant in group:
            if grant.pk in errors:
                failed.append((grant, errors[grant.pk], connector.take_inventory(grant.pk)))
            elif grant.pk in present:
                message = "The target still shows the account or a session after revoking."
                failed.append((grant, message, connector.take_inventory(grant.pk)))
            else:
                gone.append(grant)
                found[grant.pk] = connector.take_inventory(grant.pk)
        _transition_many(
            gone,
            ALLOWED_GRANT,
            GS.REVOKED,
            revoked_at=revoked_at,
            verified_at=verified_at,
            next_attempt_at=None,
            last_error="",
        )
        activity.store_digests(gone, connector.take_activity(grant.pk for grant in gone))
        appended += [
            (
                "grant.revoked",
                grant.ended_by,
                grant,
                {
                    **_snapshot(grant.profile, grant.user),
                    "reason": grant.end_reason,
                    "revoked_at": grant.revoked_at,
                    "verified_at": grant.verified_at,
                    "expires_at": grant.expires_at,
                    "attempts": grant.attempts + 1,
                    "objects": found[grant.pk],
                    **activity.audit_details(grant),
                },
            )
            for grant in gone
        ]
        done += gone
    for grant, message, objects in failed:
        appended.append(_revocation_failed(grant, message, objects=objects))
        found[grant.pk] = objects
    audit.record_many(appended)
    # What a failed attempt already removed is not found again by the next one: it is reported now too.
    _report_objects([grant for grant in grants if found.get(grant.pk)], found)
    if done:
        # One announcement (so one notification task) for the batch: in a burst, a task (and its queue rows)
        # per grant cost the portal's database more than the revocations themselves.
        events.announce("grants_revoked", grant_ids=[grant.pk for grant in done])
    return done


def _report_objects(grants: list[Grant], found: dict[int, list[dict]]) -> None:
    """Open a drift finding for each grant whose account had made or granted things on the target.

    Revocation already dropped or revoked them (or handed data objects to the
    owner role); an admin still looks at what a grant user built.
    """
    if not grants:
        return
    findings = DriftFinding.objects.bulk_create(
        DriftFinding(
            target=grant.profile.target,
            external_ref=grant.external_ref or f"grant {grant.pk}",
            grant=grant,
            kind=DriftFinding.Kind.OBJECTS,
            action=objects_summary(found[grant.pk]),
        )
        for grant in grants
    )
    audit.record_many(
        (
            "drift.found",
            None,
            finding,
            {
                "target": finding.target.name,
                "external_ref": finding.external_ref,
                "kind": finding.kind,
                "grant": finding.grant_id,
                "action": finding.action,
                "objects": found[finding.grant_id],
            },
        )
        for finding in findings
    )
    ids = [finding.pk for finding in findings]
    events.announce("drift_found", finding_ids=ids)


def objects_summary(objects: list[dict]) -> str:
    """Return one line saying what revocation found and did,
    e.g. "2 objects: function appdb.public.peek() dropped, …"."""
    parts = []
    for item in objects:
        where = f"{item['database']}." if item.get("database") else ""
        parts.append(f"{item['kind']} {where}{item['name']} {item['action']}")
    line = f"{len(objects)} object(s) the grant's account made or granted: " + "; ".join(parts)
    return line if len(line) <= 200 else line[:199] + "…"


def _revocation_failed(grant: Grant, message: str, *, objects: list[dict] | None = None) -> tuple:
    """Push a grant's revocation back with backoff; return its audit event (the caller appends it)."""
    # Like Vault's lease manager: retry with growing delays, flag the grant
    # after a few attempts, and keep trying; never claim it is gone. The
    # delay stays short (JIT_REVOKE_RETRY_MAX): a target back from an outage
    # sees its revocations within seconds, and the pass's circuit breaker
    # makes a retry on a target still down cost one connection attempt.
    grant.attempts += 1
    grant.last_error = message
    delay = min(2**grant.attempts, settings.JIT_REVOKE_RETRY_MAX)
    grant.next_attempt_at = timezone.now() + datetime.timedelta(seconds=delay)
    grant.save(update_fields=["attempts", "last_error", "next_attempt_at"])
    log.warning("Revoking grant %s failed (attempt %s): %s", grant.pk, grant.attempts, message)
    return (
        "grant.revoke_failed",
        None,
        grant,
        {
            **_snapshot(grant.profile, grant.user),
            "error": message,
            "attempt": grant.attempts,
            "failing": grant.revocation_failing,
            **({"objects": objects} if objects else {}),
        },
    )


def reveal_credentials(grant_id, *, actor, step_up: StepUp | None = None, channel: str = "web") -> dict:
    """Return the grant's credentials to its holder, once, and forget them; a risky profile needs `step_up`."""
    with transaction.atomic():
        grant = _locked_grant(grant_id)
        if grant.user_id != actor.pk:
            _refuse_later = "Only the holder can see these credentials."
        else:
            _refuse_later = None
            if not grant.credentials_available:
                raise TransitionError("These credentials were already shown once, or the grant is no longer active.")
            _refuse_later = policy.step_up_refusal([grant.profile], action="reveal", channel=channel, step_up=step_up)
        if _refuse_later is None:
            credentials = sealing.unseal(grant.sealed_credentials)
            grant.sealed_credentials = ""
            grant.credentials_seen_at = timezone.now()
            grant.save(update_fields=["sealed_credentials", "credentials_seen_at"])
            audit.record(
                "grant.credentials_viewed",
                actor=actor,
                obj=grant,
                details={
                    **_snapshot(grant.profile, grant.user),
                    **policy.step_up_details([grant.profile], channel=channel, step_up=step_up),
                },
            )
            if credentials is None:
                raise TransitionError(
                    "These credentials can no longer be read (the portal's key changed); release and request again."
                )
            return credentials
    if grant.user_id != actor.pk:
        _refuse("grant.credentials_refused", actor=actor, obj=grant, reason=_refuse_later)
    _refuse(
        "grant.credentials_refused",
        actor=actor,
        obj=grant,
        reason=_refuse_later,
        error=StepUpRequiredError,
        details=_step_up_facts(channel, step_up),
    )


# Policy -------------------------------------------------------------------


def enforce_group_policy(user) -> tuple[list[int], list[int]]:
    """End what `user` may no longer have: revoke live grants of profiles they may no longer request,
    and cancel pending requests (extensions too) they could no longer be given, reason `policy`.

    A deactivated account may request nothing: all its live grants are
    revoked and all its pending requests cancelled. Return (grant ids, request ids).
    """
    revoked, cancelled = [], []
    live = Grant.objects.filter(user=user, status__in=[GS.SCHEDULED, GS.ACTIVE]).select_related("profile")
    for grant in live:
        # Not `ineligibility`: a disabled profile's grants run to expiry
        # unless the catalog says otherwise (`--revoke-removed`).
        if not policy.may_request(user, grant.profile):
            try:
                revoke_grant(grant.pk, actor=None, reason=Grant.EndReason.POLICY)
            except TransitionError:
                continue  # ended meanwhile
            revoked.append(grant.pk)
    for req in AccessRequest.objects.filter(requester=user, status=RS.PENDING).select_related("profile").order_by("pk"):
        why = policy.ineligibility(user, req.profile)
        if why and _cancel_by_policy(req.pk, why):
            cancelled.append(req.pk)
    return revoked, cancelled


def cancel_requests_of_disabled_profile(profile: AccessProfile) -> list[int]:
    """Cancel the pending requests and extensions of a profile just disabled (reason `policy`); return their ids."""
    if profile.enabled:
        raise ValueError(f"profile {profile.name} is enabled")
    why = f"the access profile {profile.title} is disabled"
    pending = AccessRequest.objects.filter(profile=profile, status=RS.PENDING).order_by("pk")
    return [pk for pk in pending.values_list("pk", flat=True) if _cancel_by_policy(pk, why)]


def _cancel_by_policy(request_id, why: str) -> bool:
    with transaction.atomic():
        req = _lock_request(request_id)
        if req.status != RS.PENDING:
            return False  # decided meanwhile
        _close_request(req, RS.CANCELLED, comment=f"Cancelled by policy: {why}.")
        details = {**_snapshot(req.profile, req.requester), "reason": "policy", "why": why}
        audit.record("request.cancelled", obj=req, details=details)
        tallies.add(req)
    return True
