"""Access reviews (certification campaigns): who may keep requesting and approving each profile.

A campaign lists, for each of its profiles, every person who may request it
(through its groups) and every person who may approve it (its steps' groups
and rotations), each with their use of it in the period. The profile's
reviewers (those the catalog names, else its approvers) decide *keep* or
*remove* with a comment; nobody reviews their own eligibility. *Remove*
takes effect at once: an `EligibilityRemoval` that `policy.may_request` and
the approver checks honour everywhere, the person's pending requests
cancelled and live grants ended (reason `policy`) through the lifecycle, and
the IdP group managers told (`eligibility_removed`). At the due date the
undecided items follow the campaign's rule, which it states when it opens.

Every write of these rows is a function here, in one transaction with its
audit event, like `grants/lifecycle.py`; the rows have no `status`: a
campaign is open until `closed_at`, an item undecided until `decision`.
"""

from __future__ import annotations

import datetime
import logging

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

import audit

from . import events, lifecycle, policy
from .lifecycle import InvalidRequestError, NotAllowedError, TransitionError
from .models import (
    AccessProfile,
    AccessRequest,
    AccessReview,
    AccessReviewItem,
    Approval,
    EligibilityRemoval,
    Grant,
    OnCallSchedule,
    ReviewSchedule,
)

log = logging.getLogger(__name__)

OPEN_PERMISSION = "grants.open_accessreview"
Role = AccessReviewItem.Role
Decision = AccessReviewItem.Decision

DEFAULT_PERIOD_DAYS = 90
MAX_PERIOD_DAYS = 366
MIN_OPEN = datetime.timedelta(hours=1)  # a campaign due sooner could not be reviewed
MAX_OPEN = datetime.timedelta(days=365)
REMIND_BEFORE = datetime.timedelta(days=3)  # at most; a short campaign is reminded half way
MIN_COMMENT, MAX_COMMENT = 5, 2000
# A catalog schedule's calendar: a campaign opens at the start of each period (UTC), counting use over one period.
PERIOD_MONTHS = {"month": 1, "quarter": 3, "half-year": 6, "year": 12}


# Who is reviewed, and by whom ----------------------------------------------------------------------------------


def requesters_of(profile: AccessProfile) -> dict:
    """Return {user: what gives it} for the active people who may request `profile` now (policy.may_request).

    An empty `requestable_by` means everyone signed in may ask: every active account is listed.
    """
    User = get_user_model()
    groups = list(profile.requestable_by.all())
    people = User.objects.filter(is_active=True)
    if groups:
        people = people.filter(groups__in=groups).distinct()
    removed = EligibilityRemoval.objects.in_force().filter(profile=profile, role=Role.REQUESTER).values("person")
    found = {}
    for user in people.exclude(pk__in=removed).prefetch_related("groups").order_by("username"):
        if groups:
            names = sorted({g.name for g in user.groups.all()} & {g.name for g in groups})
            found[user] = "groups: " + ", ".join(names)
        else:
            found[user] = "everyone (no group restriction)"
    return found


def approvers_of(profile: AccessProfile) -> dict:
    """Return {user: what gives it} for the active people a step of `profile` names (groups, fallbacks, rotations).

    "The requester's manager" names nobody in particular: managers are reviewed in the IdP, with the reporting line.
    """
    sources: dict[int, list[str]] = {}
    User = get_user_model()
    for step in policy.steps_for(profile):
        for group in filter(None, [step.group, step.fallback_group]):
            for pk in User.objects.filter(groups__name=group, is_active=True).values_list("pk", flat=True):
                sources.setdefault(pk, []).append(f"group {group}")
        for name in filter(None, [step.schedule, step.fallback_schedule]):
            schedule = OnCallSchedule.objects.filter(name=name).first()
            members = schedule.members if schedule else []
            for pk in User.objects.filter(username__in=members, is_active=True).values_list("pk", flat=True):
                sources.setdefault(pk, []).append(f"on call {name}")
    removed = set(
        EligibilityRemoval.objects.in_force()
        .filter(profile=profile, role=Role.APPROVER)
        .values_list("person", flat=True)
    )
    users = User.objects.filter(pk__in=set(sources) - removed).order_by("username")
    return {user: ", ".join(dict.fromkeys(sources[user.pk])) for user in users}


def profile_reviewers(profile: AccessProfile) -> list:
    """Return who reviews `profile`'s eligibility: the reviewers the catalog names, else its approvers."""
    if profile.review_reviewers:
        User = get_user_model()
        return list(User.objects.filter(username__in=profile.review_reviewers, is_active=True).order_by("username"))
    return list(approvers_of(profile))


def _admins() -> list:
    return list(get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("username"))


def item_reviewers(item: AccessReviewItem, *, pools: dict | None = None) -> list:
    """Return who may decide `item`, never its person.

    The profile's reviewers (`profile_reviewers`), and for a requester the
    manager when a step lets managers approve. If that leaves nobody (the
    person is the only reviewer), it falls to the profile's other approvers,
    and if there are none, to the portal's admins (superusers).
    `pools`: profile id -> profile_reviewers, read once for a page of items.
    """
    pool = pools[item.profile_id] if pools is not None and item.profile_id in pools else profile_reviewers(item.profile)
    found = [u for u in pool if u.pk != item.person_id]
    if item.role == Role.REQUESTER and any(s.manager for s in policy.steps_for(item.profile)):
        manager = item.person.manager if item.person.manager_id else None
        if manager is not None and manager.is_active and all(u.pk != manager.pk for u in found):
            found.append(manager)
    if not found:
        found = [u for u in approvers_of(item.profile) if u.pk != item.person_id]
    if not found:
        found = [u for u in _admins() if u.pk != item.person_id]
    return found


def review_refusal(user, item: AccessReviewItem, *, pools: dict | None = None) -> str | None:
    """Return why `user` may not decide `item`, or None if they may: the one answer for pages and the API."""
    if item.person_id == user.pk:
        return "You cannot review your own eligibility."
    if not user.is_authenticated or not user.is_active:
        return "You are not a reviewer of this item."
    if all(u.pk != user.pk for u in item_reviewers(item, pools=pools)):
        return "You are not a reviewer of this item."
    return None


def may_open(user) -> bool:
    """Return whether `user` may open a campaign: auditors or staff given the permission, and superusers."""
    return user.is_authenticated and user.is_active and user.has_perm(OPEN_PERMISSION)


# Use in the period --------------------------------------------------------------------------------------------


def _use(profile: AccessProfile, person, start: datetime.datetime, end: datetime.datetime) -> dict:
    """Return the person's grants of `profile` that ran in [start, end): how many, hours, last use, break-glass."""
    grants = (
        Grant.objects.filter(profile=profile, user=person, starts_at__isnull=False, starts_at__lt=end)
        .filter(Q(window_end__isnull=True) | Q(window_end__gt=start))
        .select_related("request")
    )
    hours, last, glass, count = 0.0, None, 0, 0
    for g in grants:
        stop = min(t for t in (g.expires_at, g.revoke_requested_at, g.revoked_at, end) if t is not None)
        begin = max(g.starts_at, start)
        if stop > begin:
            hours += (stop - begin).total_seconds() / 3600
        count += 1
        glass += g.request.break_glass
        last = g.starts_at if last is None or g.starts_at > last else last
    approvals = Approval.objects.filter(approver=person, request__profile=profile, created_at__gte=start)
    denials = AccessRequest.objects.filter(
        decided_by=person, profile=profile, status=AccessRequest.Status.DENIED, decided_at__gte=start
    )
    decisions = approvals.filter(created_at__lt=end).count() + denials.filter(decided_at__lt=end).count()
    return {
        "grants": count,
        "hours": round(hours, 2),
        "last_used_at": last,
        "break_glass": glass,
        "decisions": decisions,
    }


# Opening ------------------------------------------------------------------------------------------------------


def open_review(
    *,
    actor,
    profiles,
    due_at: datetime.datetime,
    undecided: str = AccessReview.Undecided.KEEP,
    title: str = "",
    period_days: int = DEFAULT_PERIOD_DAYS,
    schedule: str = "",
    now: datetime.datetime | None = None,
) -> AccessReview:
    """Open a campaign over `profiles`, due at `due_at`; `actor` None: the catalog's schedule opens it.

    Each profile's requesters and approvers become items, with their use in
    the `period_days` before now. `undecided` (keep or remove) is what
    happens to items nobody decided by the due date.
    """
    now = now or timezone.now()
    if actor is not None and not may_open(actor):
        reason = "Only auditors and admins with the permission to open access reviews may open one."
        audit.record("access_review.open_refused", actor=actor, details={"reason": reason})
        raise NotAllowedError(reason)
    profiles = list(profiles)
    title = (title or "").strip() or f"Access review {now.date().isoformat()}"
    errors = {}
    if not profiles:
        errors["profiles"] = "Choose at least one access profile to review."
    if due_at is None or due_at < now + MIN_OPEN:
        errors["due_at"] = "The due date must be at least an hour from now."
    elif due_at > now + MAX_OPEN:
        errors["due_at"] = "The due date must be within a year."
    if undecided not in AccessReview.Undecided.values:
        errors["undecided"] = "Say what happens to undecided items: keep or remove."
    if not isinstance(period_days, int) or not 1 <= period_days <= MAX_PERIOD_DAYS:
        errors["period_days"] = f"The period is 1 to {MAX_PERIOD_DAYS} days."
    if len(title) > 200:
        errors["title"] = "A title has at most 200 characters."
    if errors:
        raise InvalidRequestError(errors)
    start = now - datetime.timedelta(days=period_days)
    with transaction.atomic():
        review = AccessReview.objects.create(
            title=title,
            opened_by=actor,
            opened_at=now,
            due_at=due_at,
            period_start=start,
            undecided=undecided,
            schedule=schedule,
        )
        review.profiles.set(profiles)
        items = []
        for profile in sorted(profiles, key=lambda p: p.name):
            for role, people in ((Role.REQUESTER, requesters_of(profile)), (Role.APPROVER, approvers_of(profile))):
                for person, via in people.items():
                    use = _use(profile, person, start, now)
                    items.append(
                        AccessReviewItem(review=review, profile=profile, person=person, role=role, via=via, **use)
                    )
        AccessReviewItem.objects.bulk_create(items)
        audit.record(
            "access_review.opened",
            actor=actor,
            obj=review,
            details={
                "title": title,
                "profiles": sorted(p.name for p in profiles),
                "due_at": due_at,
                "undecided": undecided,
                "period_start": start,
                "items": len(items),
                "schedule": schedule,
            },
        )
        events.announce("access_review_opened", review_id=review.pk)
    return review


# Deciding -----------------------------------------------------------------------------------------------------


def decide_item(item_id, *, actor, decision: str, comment: str) -> AccessReviewItem:
    """Keep or remove one person's eligibility, with a comment: one of the item's reviewers, never the person.

    While the campaign is open a reviewer may change a decision (keep to
    remove, remove to keep) with a new comment: the item keeps what it
    replaced (`changed_from`, `earlier_decisions`), each decision is its own
    audit event, and remove to keep reinstates the removal this item made
    (what it already ended stays ended).
    """
    comment = (comment or "").strip()
    if decision not in Decision.values:
        raise InvalidRequestError({"decision": "Choose keep or remove."})
    with transaction.atomic():
        item = (
            AccessReviewItem.objects.select_for_update(of=("self",))
            .select_related("review", "profile__policy", "person__manager", "decided_by")
            .get(pk=item_id)
        )
        refusal = review_refusal(actor, item)
        if refusal is None:
            # Read afresh, not from the join: when the lock waited for a closing (which locks the items it
            # decides), PostgreSQL re-reads the item but not the campaign row joined to it.
            if AccessReview.objects.filter(pk=item.review_id, closed_at__isnull=False).exists():
                raise TransitionError("This access review is closed; its items can no longer be decided.")
            if item.decision == decision:
                raise TransitionError(
                    f"This item was already decided: {item.get_decision_display().lower()}. "
                    "To change it, choose the other decision."
                )
            if not MIN_COMMENT <= len(comment) <= MAX_COMMENT:
                raise InvalidRequestError(
                    {"comment": f"Say why in {MIN_COMMENT} to {MAX_COMMENT} characters; the comment is evidence."}
                )
            now = timezone.now()
            if item.decision:
                _note_change(item)
            previous = item.changed_from if item.decision else ""
            _decide(item, decision, actor=actor, comment=comment, by_rule=False, now=now)
            if previous == Decision.REMOVE and decision == Decision.KEEP:
                removal = EligibilityRemoval.objects.in_force().filter(item=item).select_for_update().first()
                if removal is not None:  # None: another campaign's removal, which this item did not make
                    _reinstate(removal, actor=actor, reason=comment, now=now)
            return item
    # Recorded in its own transaction: the refusal is evidence too.
    audit.record("access_review.decide_refused", actor=actor, obj=item, details={"reason": refusal, **_facts(item)})
    raise NotAllowedError(refusal)


def _note_change(item: AccessReviewItem) -> None:
    """Keep the decision about to be replaced on the item: the evidence shows both."""
    who = item.decided_by.username if item.decided_by_id else "the campaign's rule"
    when = item.decided_at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if item.decided_at else ""
    line = f"{when} {item.decision} by {who}: {item.comment}".strip()
    item.earlier_decisions = f"{item.earlier_decisions}\n{line}" if item.earlier_decisions else line
    item.changed_from = item.decision


def _facts(item: AccessReviewItem) -> dict:
    return {
        "review": item.review_id,
        "profile": item.profile.name,
        "person": item.person.username,
        "role": item.role,
    }


def _decide(item: AccessReviewItem, decision: str, *, actor, comment: str, by_rule: bool, now) -> None:
    item.decision, item.decided_by, item.decided_at, item.comment, item.by_rule = (
        decision,
        actor,
        now,
        comment,
        by_rule,
    )
    item.save(
        update_fields=[
            "decision",
            "decided_by",
            "decided_at",
            "comment",
            "by_rule",
            "changed_from",
            "earlier_decisions",
        ]
    )
    details = {**_facts(item), "decision": decision, "comment": comment, "by_rule": by_rule, "via": item.via}
    if item.changed_from:
        details["changed_from"] = item.changed_from
    audit.record("access_review.decided", actor=actor, obj=item, details=details)
    if decision == Decision.REMOVE:
        _remove(item, now=now)


def _remove(item: AccessReviewItem, *, now) -> EligibilityRemoval:
    """Remove the eligibility in the portal at once, end what the person may no longer have, tell the IdP's side."""
    removal = EligibilityRemoval.objects.in_force().filter(person=item.person, profile=item.profile, role=item.role)
    if removal.exists():
        return removal.get()  # removed already, by another campaign
    removal = EligibilityRemoval.objects.select_for_update().filter(item=item).first()
    if removal is not None:
        # This item removed, was changed to keep (reinstated), and removes again: the same row, in force again.
        removal.created_at, removal.reinstated_at, removal.reinstated_by, removal.reinstate_reason = now, None, None, ""
        removal.save(update_fields=["created_at", "reinstated_at", "reinstated_by", "reinstate_reason"])
    else:
        removal, created = EligibilityRemoval.objects.get_or_create(
            person=item.person,
            profile=item.profile,
            role=item.role,
            reinstated_at=None,
            defaults={"item": item, "created_at": now},
        )
        if not created:
            return removal  # another campaign's, made meanwhile
    audit.record(
        "eligibility.removed",
        actor=item.decided_by,
        obj=removal,
        details={**_facts(item), "item": item.pk, "via": item.via},
    )
    if item.role == Role.REQUESTER:
        # The lifecycle's own rule for lost eligibility: live grants end (reason `policy`),
        # pending requests and extensions are cancelled, each with its audit event.
        lifecycle.enforce_group_policy(item.person)
    events.announce("eligibility_removed", removal_id=removal.pk)
    return removal


def _reinstate(removal: EligibilityRemoval, *, actor, reason: str, now) -> None:
    """Lift a removal (locked by the caller): the policy lets the person request or approve again.

    What the removal did (requests cancelled, grants ended) stays done; nothing is re-created.
    """
    removal.reinstated_at, removal.reinstated_by, removal.reinstate_reason = now, actor, reason
    removal.save(update_fields=["reinstated_at", "reinstated_by", "reinstate_reason"])
    audit.record(
        "eligibility.reinstated",
        actor=actor,
        obj=removal,
        details={
            "person": removal.person.username,
            "profile": removal.profile.name,
            "role": removal.role,
            "item": removal.item_id,
            "review": removal.item.review_id if removal.item_id else None,
            "removed_at": removal.created_at,
            "reason": reason,
        },
    )
    events.announce("eligibility_reinstated", removal_id=removal.pk)


def reinstate_eligibility(removal_id, *, actor, reason: str, now=None) -> EligibilityRemoval:
    """Undo a removal after its campaign closed, saying why: whoever may open campaigns, never for themselves.

    While the campaign is open its reviewers change the item's decision instead (`decide_item`).
    """
    now = now or timezone.now()
    reason = (reason or "").strip()
    with transaction.atomic():
        removal = (
            EligibilityRemoval.objects.select_for_update(of=("self",))
            .select_related("person", "profile", "item__review")
            .get(pk=removal_id)
        )
        if not may_open(actor):
            refusal = "Only those who may open access reviews reinstate a removal."
        elif removal.person_id == actor.pk:
            refusal = "You cannot reinstate your own eligibility."
        else:
            refusal = None
        if refusal is None:
            if not removal.in_force:
                raise TransitionError(
                    f"This removal was already reinstated, {removal.reinstated_at:%Y-%m-%d %H:%M} UTC."
                )
            if removal.item_id and removal.item.review.closed_at is None:
                raise TransitionError(
                    "Its access review is still open: a reviewer changes the item's decision to keep instead."
                )
            if not MIN_COMMENT <= len(reason) <= MAX_COMMENT:
                raise InvalidRequestError(
                    {"reason": f"Say why in {MIN_COMMENT} to {MAX_COMMENT} characters; the reason is evidence."}
                )
            _reinstate(removal, actor=actor, reason=reason, now=now)
            return removal
    details = {"reason": refusal, "person": removal.person.username, "profile": removal.profile.name}
    audit.record("eligibility.reinstate_refused", actor=actor, obj=removal, details=details)
    raise NotAllowedError(refusal)


# Reminders and the due date -----------------------------------------------------------------------------------


def remind_at(review: AccessReview) -> datetime.datetime:
    """Return when the reviewers of an open campaign are reminded: REMIND_BEFORE the due date, or half way."""
    return review.due_at - min(REMIND_BEFORE, (review.due_at - review.opened_at) / 2)


def remind_reviewers(now=None) -> list[int]:
    """Announce `access_review_reminder` once for each open campaign near its due date with items undecided."""
    now = now or timezone.now()
    reminded = []
    for review in AccessReview.objects.filter(closed_at=None, reminded_at=None, due_at__gt=now):
        if remind_at(review) > now or not review.items.filter(decision="").exists():
            continue
        # Compare-and-set: two workers send one reminder.
        if AccessReview.objects.filter(pk=review.pk, reminded_at=None).update(reminded_at=now) == 1:
            events.announce("access_review_reminder", review_id=review.pk)
            reminded.append(review.pk)
    return reminded


def close_due_reviews(now=None) -> list[int]:
    """Apply each due campaign's rule to its undecided items, then close it; return the ids closed."""
    now = now or timezone.now()
    closed = []
    for pk in AccessReview.objects.filter(closed_at=None, due_at__lte=now).values_list("pk", flat=True):
        with transaction.atomic():
            review = AccessReview.objects.select_for_update(skip_locked=True).filter(pk=pk, closed_at=None).first()
            if review is None:
                continue  # another worker has it, or closed it
            _close(review, actor=None, now=now)
            closed.append(review.pk)
    return closed


def close_review(review_id, *, actor, now=None) -> AccessReview:
    """Close an open campaign before its due date: its undecided items follow its rule, as at the due date.

    Whoever may open campaigns, unless their own eligibility in it is still
    undecided (closing would decide it by the rule).
    """
    now = now or timezone.now()
    with transaction.atomic():
        review = AccessReview.objects.select_for_update().get(pk=review_id)
        if not may_open(actor):
            refusal = "Only auditors and admins with the permission to open access reviews may close one."
        elif review.items.filter(person=actor, decision="").exists():
            refusal = "Your own eligibility in this campaign is undecided: closing it would decide it by the rule."
        else:
            refusal = None
        if refusal is None:
            if review.closed_at is not None:
                raise TransitionError(f"This access review is already closed, {review.closed_at:%Y-%m-%d %H:%M} UTC.")
            _close(review, actor=actor, now=now)
            return review
    audit.record("access_review.close_refused", actor=actor, obj=review, details={"reason": refusal})
    raise NotAllowedError(refusal)


def _close(review: AccessReview, *, actor, now) -> None:
    """Decide the locked open campaign's undecided items by its rule and close it: at the due date or early."""
    early = actor is not None
    if early:
        comment = (
            f"Nobody decided before {actor.username} closed the campaign early: its rule applied ({review.undecided})."
        )
    else:
        comment = f"Nobody decided by the due date: the campaign's rule applied ({review.undecided})."
    undecided = review.items.filter(decision="").select_related("profile", "person", "review")
    applied = 0
    for item in undecided.select_for_update(of=("self",)).order_by("pk"):
        _decide(item, review.undecided, actor=None, comment=comment, by_rule=True, now=now)
        applied += 1
    review.closed_at, review.closed_by = now, actor
    review.save(update_fields=["closed_at", "closed_by"])
    audit.record(
        "access_review.closed",
        actor=actor,
        obj=review,
        details={
            "title": review.title,
            "undecided": review.undecided,
            "applied": applied,
            "early": early,
            "due_at": review.due_at,
            "closed_at": now,
        },
    )


# The catalog's schedules --------------------------------------------------------------------------------------


def period_start(every: str, now: datetime.datetime) -> datetime.datetime:
    """Return when the calendar period (`every`: month, quarter, half-year, year) holding `now` began, in UTC."""
    months = PERIOD_MONTHS[every]
    utc = now.astimezone(datetime.UTC)
    return datetime.datetime(utc.year, (utc.month - 1) // months * months + 1, 1, tzinfo=datetime.UTC)


def open_scheduled_reviews(now=None) -> list[int]:
    """Open the campaign of each catalog schedule that has none in the current period; return the ids opened.

    A schedule applied in the middle of a quarter opens its first campaign at
    the next run, then one at the start of each quarter. The schedule's row
    lock makes two workers open one campaign.
    """
    now = now or timezone.now()
    opened = []
    for pk in ReviewSchedule.objects.order_by("pk").values_list("pk", flat=True):
        with transaction.atomic():
            schedule = ReviewSchedule.objects.select_for_update(skip_locked=True).filter(pk=pk).first()
            if schedule is None:
                continue
            start = period_start(schedule.every, now)
            if AccessReview.objects.filter(schedule=schedule.name, opened_at__gte=start).exists():
                continue
            profiles = AccessProfile.objects.filter(enabled=True).order_by("name")
            if schedule.profiles:
                profiles = profiles.filter(name__in=schedule.profiles)
            if not profiles.exists():
                log.warning("Review schedule %s names no enabled profile; nothing opened.", schedule.name)
                continue
            review = open_review(
                actor=None,
                profiles=profiles,
                due_at=now + schedule.due_in,
                undecided=schedule.undecided,
                title=f"{schedule.title or schedule.name}: {start:%Y-%m}",
                period_days=min(MAX_PERIOD_DAYS, PERIOD_MONTHS[schedule.every] * 31),
                schedule=schedule.name,
                now=now,
            )
            opened.append(review.pk)
    return opened
