"""Tell people what needs them, through every channel. Runs in background tasks, never in a request.

The core announces what happened after its transaction commits
(grants.events); `subscriptions` enqueues the task of the same name below
with the ids; each reads the rows again, so a late task tells the truth of
now (a request decided meanwhile is not announced as waiting).
Who hears what:

- approvers of the current step: a new request (and the next step of one),
  with a link to decide it and, on Slack, Approve and Deny buttons;
- the requester: the decision, the access being ready, ten minutes before
  it ends (from the sweeper), and its end;
- the security contacts (SECURITY_EMAIL, SLACK_SECURITY_CHANNEL or the
  webhook): every break-glass use, every drift finding and every emergency
  password login at /admin/.

People choose email, Slack or both (`accounts.NotificationPreference`);
`delivery` sends each message on its own, and tries a failed one again.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from accounts import identity
from audit.models import AuditEvent
from grants import lifecycle, policy, selectors
from grants.durations import human_duration
from grants.models import AccessRequest, DriftFinding, Grant

from . import slack
from .delivery import tell, tell_routes, tell_security
from .messages import approval_blocks, approval_message, bundle_titles, first_of_bundle, link, outcome, when, why
from .recipients import admins, approvers_of, current_approvers, routes_of

log = logging.getLogger(__name__)

RS = AccessRequest.Status


# Events (tasks) -----------------------------------------------------------------


def approval_needed(request_id):
    """Tell the approvers of the step a pending request waits for, with a link and Slack buttons."""
    req = AccessRequest.objects.select_related("profile__target", "profile__policy", "requester", "extends").get(
        pk=request_id
    )
    if req.status != RS.PENDING:
        return 0
    approvers = list(current_approvers(req))
    if req.bundle:
        # A bundle is decided once: whoever may decide an earlier member hears about that one only.
        earlier = AccessRequest.objects.filter(bundle=req.bundle, status=RS.PENDING, pk__lt=req.pk).select_related(
            "profile__policy", "requester"
        )
        told = {u.pk for e in earlier for u in current_approvers(e)}
        approvers = [u for u in approvers if u.pk not in told]
    title, body = approval_message(req)
    first = first_of_bundle(req, status=RS.PENDING)
    # Suggested reviewers are told first, each with a word on why.
    suggested = [u for u in approvers if u.username in req.reviewers]
    sent = tell(suggested, title, f"{req.requester.username} suggested you as a reviewer.\n{body}", decide=req)
    sent += tell([u for u in approvers if u not in suggested], title, body, decide=req, fallback=first)
    if first:
        sent += _route(req, title, body)
    return sent


def _route(req: AccessRequest, title: str, body: str) -> int:
    """Announce the request in its profile's (or target's) channels, with the link back to the portal."""
    if req.reviewers:
        body = f"Suggested reviewers: {', '.join(req.reviewers)}.\n{body}"
    return tell_routes(routes_of(req.profile), title, body, link("grants:request_detail", req.pk))


def _approval_again(request_id, *, title_prefix: str, line) -> int:
    req = AccessRequest.objects.select_related("profile__target", "profile__policy", "requester", "extends").get(
        pk=request_id
    )
    if req.status != RS.PENDING or not first_of_bundle(req, status=RS.PENDING):
        return 0
    step = policy.waiting_step(req)
    title, body = approval_message(req)
    opened = req.step_opened_at or req.created_at
    body = f"{line(step, human_duration(timezone.now() - opened))}\n{body}"
    sent = tell(current_approvers(req), f"{title_prefix}: {title}", body, decide=req, fallback=True)
    # The profile's channels heard of the request: they hear that nobody has decided it yet, too.
    return sent + _route(req, f"{title_prefix}: {title}", body)


def approval_reminder(request_id):
    """Remind the approvers of a step that nobody has decided for its `remind_after`."""
    return _approval_again(
        request_id, title_prefix="Reminder", line=lambda step, ago: f"Nobody has decided this for {ago}."
    )


def approval_escalated(request_id):
    """Tell the step's approvers, now with its fallback, that nobody decided it in time."""
    return _approval_again(
        request_id,
        title_prefix="Escalated",
        line=lambda step, ago: f"Nobody decided this step in {ago}: it escalated to {step.describe_fallback()}.",
    )


def request_decided(request_id):
    """Tell the requester that their request (or extension) was approved or denied."""
    req = AccessRequest.objects.select_related("profile__target", "requester", "decided_by", "extends").get(
        pk=request_id
    )
    if req.status not in (RS.APPROVED, RS.DENIED) or not first_of_bundle(req, status=req.status):
        return 0
    what = " and ".join(bundle_titles(req))
    if req.break_glass:
        first = (
            f"Break-glass access to {what} on {req.profile.target} was granted at once; an approver will review "
            "its use."
        )
    elif req.decided_by_id:
        first = f"{req.decided_by.label} {req.status} your request for {what} on {req.profile.target}."
    else:
        first = f"The policy approved your request for {what} on {req.profile.target} (rule: {req.auto_rule})."
    if req.extends_id and req.status == RS.APPROVED:
        first += f" Your access now ends {when(req.extends.expires_at)}."
    comment = f"\nComment: {req.decision_comment}" if req.decision_comment else ""
    kind = "Extension" if req.extends_id else "Request"
    title = f"{kind} {req.status}: {what} for {human_duration(req.duration)}"
    body = f"{first}{comment}\n{why(req)}\n\n{link('grants:request_detail', req.pk)}"
    return tell([req.requester], title, body)


def grant_provisioned(grant_id):
    """Tell the holder that the access is ready, and until when."""
    grant = Grant.objects.select_related("profile__target", "user", "request").get(pk=grant_id)
    if not grant.is_active:
        return 0
    title = f"Access ready: {grant.profile.title} until {when(grant.expires_at)}"
    body = (
        f"Your access to {grant.profile.title} on {grant.profile.target} is ready until {when(grant.expires_at)}.\n"
        f"{why(grant.request)}\n\n"
        f"Show the credentials (once), extend or release it on My access: {link('grants:my_access')}"
    )
    return tell([grant.user], title, body)


def expiry_soon(grant_id):
    """Tell the holder that the access ends in a few minutes, with the link to extend it."""
    grant = Grant.objects.select_related("profile__target", "user", "request").get(pk=grant_id)
    if not grant.is_active:
        return 0
    left = human_duration(grant.time_left)
    title = f"Access ends in {left}: {grant.profile.title}"
    body = (
        f"Your access to {grant.profile.title} on {grant.profile.target} ends in {left}, at {when(grant.expires_at)}.\n"
        f"{why(grant.request)}\n\n"
        f"Extend it on My access: {link('grants:my_access')}"
    )
    return tell([grant.user], title, body)


_ENDED = {
    Grant.EndReason.EXPIRED: "it expired",
    Grant.EndReason.RELEASED: "you released it",
    Grant.EndReason.REVOKED: "an admin revoked it",
    Grant.EndReason.POLICY: "policy ended it: you may no longer request this profile",
}


def grant_revoked(grant_id):
    """Tell the holder that the access has ended and the target no longer has it."""
    return grants_revoked([grant_id])


def grants_revoked(grant_ids):
    """Task: `grant_revoked` for each of a revocation batch's
    grants, in one task (a burst of expiries is one per batch)."""
    sent = 0
    for grant in (
        Grant.objects.select_related("profile__target", "user", "request")
        .filter(pk__in=grant_ids, status=Grant.Status.REVOKED)
        .order_by("pk")
    ):
        title = f"Access ended: {grant.profile.title}"
        body = (
            f"Your access to {grant.profile.title} on {grant.profile.target} has ended "
            f"({_ENDED.get(grant.end_reason, grant.end_reason)}); "
            f"the target confirmed it gone at {when(grant.verified_at)}.\n"
            f"{why(grant.request)}\n\n{link('grants:grant_detail', grant.pk)}"
        )
        sent += tell([grant.user], title, body)
    return sent


def break_glass_used(request_id):
    """Tell the profile's approvers and the security channel that break-glass access was taken."""
    req = AccessRequest.objects.select_related("profile__target", "profile__policy", "requester").get(pk=request_id)
    title = f"Break-glass: {req.requester.username} on {req.profile.title}"
    body = (
        f"{req.requester.label} used break-glass access to {req.profile.title} on {req.profile.target} "
        f"for {human_duration(req.duration)}, without approval.\n"
        f"{why(req)}\n\n"
        f"Review it and close the review with a comment: {link('grants:reviews')}"
    )
    return tell(approvers_of(req), title, body) + tell_security(title, body)


def emergency_login_used(event_id):
    """Tell the security channel that someone signed in with a password at the emergency path, and from where."""
    event = AuditEvent.objects.select_related("actor").get(pk=event_id)
    facts = event.details
    where = facts.get("ip") or "an unknown address"
    browser = facts.get("user_agent") or "no user agent"
    title = f"Emergency login: {event.actor.username} signed in with a password"
    body = (
        f"{event.actor.label} signed in at {facts.get('path') or '/admin/'} with a password, not through the identity "
        f"provider, at {when(event.created_at)} from {where} ({browser}).\n"
        "If nobody planned this use of the emergency account, deactivate it now and check what it did.\n\n"
        f"Audit event: {link('admin:audit_auditevent_change', event.pk)}"
    )
    return tell_security(title, body)


def drift_found(findings):
    """Tell the portal's admins and the security channel what the reconciler found on the targets."""
    if not findings:
        return 0
    lines = [f"- {f.target.name}: {f.external_ref}: {f.get_kind_display()} ({f.action})" for f in findings]
    title = f"Drift: {len(findings)} finding(s)"
    body = (
        "The reconciler or a revocation found access on targets that no grant explains:\n"
        + "\n".join(lines)
        + f"\n\nDetails: {link('grants:targets')}"
    )
    return tell(admins(), title, body) + tell_security(title, body)


def drift_found_by_id(finding_ids):
    """Task: tell about drift findings made elsewhere (objects found at revocation)."""
    return drift_found(list(DriftFinding.objects.filter(pk__in=finding_ids).select_related("target").order_by("pk")))


def decide_from_slack(click: dict):
    """Approve or deny from a Slack button, as the portal user with the clicker's email, under the lifecycle's rules.

    The message updates to show the outcome; a refusal is told to the
    clicker alone (an ephemeral message) with the lifecycle's reason.
    """

    def answer(text):
        try:
            slack.call("chat.postEphemeral", channel=click["channel"], user=click["user"], text=text)
        except slack.SlackError as exc:
            log.warning("Could not tell Slack user %s why: %s", click["user"], exc.message)

    try:
        request_id, step = (int(part) for part in click["value"].split(":"))
    except ValueError:
        log.warning("Slack click with a malformed value %r", click["value"])
        return None
    try:
        email = slack.email_of(click["user"])
    except slack.SlackError as exc:
        answer(
            f"Nothing was decided: {exc.message}"
            if exc.permanent
            else "Nothing was decided: Slack did not say who you are; try again."
        )
        return None
    actors = list(get_user_model().objects.filter(email__iexact=email, is_active=True)[:2])
    if len(actors) != 1:
        answer(
            f"Nothing was decided: {'no' if not actors else 'more than one'} active portal account has your "
            f"Slack email ({email})."
        )
        return None
    try:
        # A click can come long after the last sign-in: decide with rights read from the IdP recently.
        actor = identity.ensure_recent_identity(actors[0])
    except identity.IdentityError as exc:
        answer(f"Nothing was decided: {exc}")
        return None
    decide = lifecycle.approve_request if click["action"] == "approve" else lifecycle.deny_request
    channel = {"channel": "slack"} if click["action"] == "approve" else {}
    try:
        decide(request_id, actor=actor, comment="via Slack", step=step, **channel)
    except AccessRequest.DoesNotExist:
        answer(f"Request #{request_id} does not exist.")
        return None
    except lifecycle.StepUpRequiredError as exc:
        answer(f"Nothing was decided: {exc} Approve it here: {link('grants:request_detail', request_id)}")
        return None
    except lifecycle.NotAllowedError as exc:
        answer(f"Nothing was decided: {exc}")
        return None
    except lifecycle.TransitionError as exc:
        answer(f"Nothing was decided: {exc}")
    req = AccessRequest.objects.select_related(
        "profile__target", "profile__policy", "requester", "decided_by", "extends"
    ).get(pk=request_id)
    said = outcome(req)
    try:
        title, _body = approval_message(req)
        slack.call(
            "chat.update",
            channel=click["channel"],
            ts=click["ts"],
            text=slack.escape(f"{title}: {said}"),
            blocks=approval_blocks(req, outcome=said),
        )
    except slack.SlackError as exc:
        log.warning("Could not update the Slack message of request %s: %s", request_id, exc.message)
    return req.status


# Access reviews -------------------------------------------------------------------------------------------------


def _review_body(review, intro: str) -> str:
    return (
        f"{intro}\n"
        f"Due: {when(review.due_at)}. Undecided items will be: {review.get_undecided_display().lower()}.\n\n"
        f"Decide them here: {link('audit:review_items', review.pk)}"
    )


def access_review_opened(review_id):
    """Tell each reviewer of a new campaign that they have items to decide."""
    review = selectors.review_of(review_id)
    if review is None or not review.is_open:
        return 0
    title = f"Access review: {review.title}"
    body = _review_body(review, "An access review needs your decisions: who may keep requesting or approving access.")
    return tell(selectors.undecided_reviewers(review), title, body)


def access_review_reminder(review_id):
    """Remind the reviewers who still have undecided items of a campaign near its due date."""
    review = selectors.review_of(review_id)
    if review is None or not review.is_open:
        return 0
    title = f"Reminder: access review {review.title} is due {when(review.due_at)}"
    body = _review_body(review, "Some people's access still waits for your decision.")
    return tell(selectors.undecided_reviewers(review), title, body)


def eligibility_removed(removal_id):
    """Tell the IdP group managers (JIT_IDP_GROUP_MANAGERS, else the admins) to take the person out of the group."""
    removal = selectors.removal_of(removal_id)
    if not removal.in_force:
        return 0  # a reviewer changed it back to keep, or it was reinstated, before this ran
    groups = selectors.idp_groups_of(removal)
    what = "request" if removal.role == selectors.REVIEW_ROLES.REQUESTER else "approve"
    person, profile = removal.person, removal.profile
    title = f"Access review: remove {person.username} from {', '.join(groups) or 'the group'} in the IdP"
    where = (
        f"Take {person.username} out of {', '.join(groups)} in the identity provider"
        if groups
        else f"No IdP group of {person.username}'s gives this any more (or the profile is open to everyone)"
    )
    body = (
        f"An access review removed {person.label} from those who may {what} {profile.title}. The portal refuses "
        f"it already. {where}, so the two agree.\n\n"
        f"Removals the IdP has not caught up with: {link('audit:reviews')}"
    )
    return tell(selectors.idp_group_managers(settings.JIT_IDP_GROUP_MANAGERS), title, body)


def eligibility_reinstated(removal_id):
    """Tell the person they may request (or approve) again, and the IdP group managers that the removal is lifted."""
    removal = selectors.removal_of(removal_id)
    if removal.in_force:
        return 0  # removed again before this ran
    what = "request" if removal.role == selectors.REVIEW_ROLES.REQUESTER else "approve"
    person, profile = removal.person, removal.profile
    why = f"Reason: {removal.reinstate_reason}" if removal.reinstate_reason else "A reviewer changed the decision."
    sent = tell(
        [person],
        f"You may {what} {profile.title} again",
        f"The access review's removal is lifted: you may {what} {profile.title} again, if an IdP group of yours "
        f"gives it. What the removal ended stays ended.\n{why}",
    )
    groups = selectors.idp_groups_of(removal)
    body = (
        f"The removal of {person.label} from those who may {what} {profile.title} is lifted. "
        + (
            f"{person.username} is in {', '.join(groups)}: nothing to do in the IdP."
            if groups
            else f"If {person.username} should have it again, put them back in its group in the identity provider."
        )
        + f"\n{why}\n\nAccess reviews: {link('audit:reviews')}"
    )
    title = f"Access review: {person.username} may {what} {profile.title} again"
    return sent + tell(selectors.idp_group_managers(settings.JIT_IDP_GROUP_MANAGERS), title, body)
