"""Tell people what needs them, by email and on Slack. Runs in background tasks, never in a request.

The lifecycle enqueues the event functions below after its transaction
commits, with ids; each reads the rows again, so a late task tells the
truth of now (a request decided meanwhile is not announced as waiting).
Who hears what:

- approvers of the current step: a new request (and the next step of one),
  with a link to decide it and, on Slack, Approve and Deny buttons;
- the requester: the decision, the access being ready, ten minutes before
  it ends (from the sweeper), and its end;
- the security channel (SECURITY_EMAIL, SLACK_SECURITY_CHANNEL or the
  webhook): every break-glass use, every drift finding and every emergency
  password login at /admin/.

People choose email, Slack or both (`accounts.NotificationPreference`).
Each message is sent on its own: one that fails is tried again later
(`RETRY_DELAYS`, a django-q2 schedule per attempt) and does not stop the
others.
"""

from __future__ import annotations

import datetime
import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.core.validators import validate_email
from django.urls import reverse
from django.utils import dateformat, timezone

from accounts import identity
from accounts.models import NotificationPreference
from audit.models import AuditEvent

from . import lifecycle, policy, selectors, slack
from .channels import get_channel
from .durations import human_duration
from .models import AccessRequest, DriftFinding, Grant

log = logging.getLogger(__name__)

RS = AccessRequest.Status
# Seconds before the 2nd, 3rd, ... attempt of a message that failed; then it is dropped (and logged).
RETRY_DELAYS = (30, 120, 600, 1800)
SLACK_TEXT_LIMIT = 2900  # a section block holds 3,000 characters


# Who -------------------------------------------------------------------------


approvers_of = selectors.approvers_of  # who may decide some step (a break-glass use is theirs to review)
current_approvers = selectors.deciders_of  # who may decide the step the request waits for now


# Words -----------------------------------------------------------------------


def _link(name: str, *args) -> str:
    return settings.PORTAL_URL.rstrip("/") + reverse(name, args=args)


def _when(value: datetime.datetime) -> str:
    # In the portal's zone, not the zone of whoever's page view sent it: the readers are other people.
    return dateformat.format(timezone.localtime(value, timezone.get_default_timezone()), "Y-m-d H:i T")


_escape = slack.escape


def _slack_text(title: str, body: str) -> str:
    return f"*{_escape(title)}*\n{_escape(body)}"[:SLACK_TEXT_LIMIT]


def _why(req: AccessRequest) -> str:
    return f"Justification: {req.justification}" + (f"\nTicket: {req.ticket}" if req.ticket else "")


def _bundle_titles(req: AccessRequest) -> list[str]:
    """Return the titles of the profiles asked for together with `req` that share its state."""
    if not req.bundle:
        return [req.profile.title]
    same = AccessRequest.objects.filter(bundle=req.bundle, status=req.status).select_related("profile").order_by("pk")
    return [r.profile.title for r in same]


def _first_of_bundle(req: AccessRequest, **same) -> bool:
    """Return whether `req` speaks for its bundle: one message per bundle, not one per member."""
    return not req.bundle or not AccessRequest.objects.filter(bundle=req.bundle, pk__lt=req.pk, **same).exists()


def approval_message(req: AccessRequest) -> tuple[str, str]:
    """Return the title and body of "this request waits for you"."""
    who, profile, target = req.requester.label, req.profile, req.profile.target
    what = " and ".join(_bundle_titles(req))
    if req.extends_id:
        title = f"Approve? {req.requester.username}: {profile.title} + {human_duration(req.duration)}"
        first = f"{who} asks to extend {profile.title} on {target} by {human_duration(req.duration)} (it ends {_when(req.extends.expires_at)})."
    else:
        title = f"Approve? {req.requester.username}: {what} for {human_duration(req.duration)}"
        window = f", from {_when(req.starts_at)}" if req.starts_at else ""
        first = f"{who} asks for {what} on {target} for {human_duration(req.duration)}{window}."
    steps = policy.steps_for(profile)
    step = f"\nStep {policy.current_step(req) + 1} of {len(steps)}." if len(steps) > 1 else ""
    asked = "".join(f"\nAsked: {a.user.label}, {a.why}." for a in selectors.on_call_asked(req))
    return title, f"{first}\n{_why(req)}{step}{asked}\n\nDecide: {_link('grants:request_detail', req.pk)}"


def approval_blocks(req: AccessRequest, *, outcome: str = "") -> list[dict]:
    """Return the Slack blocks of an approval message: its text, then buttons, or the outcome once decided."""
    title, body = approval_message(req)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": _slack_text(title, body)}}]
    if outcome:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _escape(outcome)}]})
        return blocks
    # The step travels with the click: if the request has moved on, nothing is decided by mistake.
    value = f"{req.pk}:{req.step}"
    blocks.append({
        "type": "actions",
        "block_id": f"decide-{req.pk}-{req.step}",
        "elements": [
            {"type": "button", "action_id": "approve", "style": "primary", "value": value, "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": "deny", "style": "danger", "value": value, "text": {"type": "plain_text", "text": "Deny"}},
            {"type": "button", "action_id": "open", "url": _link("grants:request_detail", req.pk), "text": {"type": "plain_text", "text": "Open in the portal"}},
        ],
    })
    return blocks


def _outcome(req: AccessRequest) -> str:
    """Return what became of the request, for the Slack message that asked about it."""
    if req.status == RS.PENDING:
        last = req.approvals.select_related("approver").order_by("-created_at").first()
        by = f"Approved by {last.approver.label} (step {last.step + 1}); " if last else ""
        return f"{by}the request waits for {policy.waiting_for(req)}."
    by = f" by {req.decided_by.label}" if req.decided_by_id else (f" by the policy ({req.auto_rule})" if req.auto_rule else "")
    return f"{req.get_status_display()}{by}" + (f": {req.decision_comment}" if req.decision_comment else "") + "."


# Events (tasks) -----------------------------------------------------------------


def approval_needed(request_id):
    """Tell the approvers of the step a pending request waits for, with a link and Slack buttons."""
    req = AccessRequest.objects.select_related("profile__target", "profile__policy", "requester", "extends").get(pk=request_id)
    if req.status != RS.PENDING:
        return 0
    approvers = list(current_approvers(req))
    if req.bundle:
        # A bundle is decided once: whoever may decide an earlier member hears about that one only.
        earlier = AccessRequest.objects.filter(bundle=req.bundle, status=RS.PENDING, pk__lt=req.pk).select_related("profile__policy", "requester")
        told = {u.pk for e in earlier for u in current_approvers(e)}
        approvers = [u for u in approvers if u.pk not in told]
    title, body = approval_message(req)
    first = _first_of_bundle(req, status=RS.PENDING)
    # Suggested reviewers are told first, each with a word on why.
    suggested = [u for u in approvers if u.username in req.reviewers]
    sent = _tell(suggested, title, f"{req.requester.username} suggested you as a reviewer.\n{body}", blocks=approval_blocks(req))
    sent += _tell([u for u in approvers if u not in suggested], title, body, blocks=approval_blocks(req), channel_fallback=first)
    if first:
        sent += _route(req, title, body)
    return sent


def routes_of(profile) -> dict[str, list[str]]:
    """Return where a profile's requests are announced: its own `notify`, per channel kind instead of its target's."""
    return {**(profile.target.notify or {}), **(profile.notify or {})}


def _route(req: AccessRequest, title: str, body: str) -> int:
    """Announce the request in its profile's (or target's) channels, with the link back to the portal."""
    if req.reviewers:
        body = f"Suggested reviewers: {', '.join(req.reviewers)}.\n{body}"
    link = _link("grants:request_detail", req.pk)
    return sum(
        deliver({"kind": "route", "channel": kind, "address": address, "title": title, "body": body, "link": link})
        for kind, addresses in sorted(routes_of(req.profile).items()) for address in addresses
    )


def _approval_again(request_id, *, title_prefix: str, line) -> int:
    req = AccessRequest.objects.select_related("profile__target", "profile__policy", "requester", "extends").get(pk=request_id)
    if req.status != RS.PENDING or not _first_of_bundle(req, status=RS.PENDING):
        return 0
    step = policy.waiting_step(req)
    title, body = approval_message(req)
    opened = req.step_opened_at or req.created_at
    body = f"{line(step, human_duration(timezone.now() - opened))}\n{body}"
    sent = _tell(current_approvers(req), f"{title_prefix}: {title}", body, blocks=approval_blocks(req), channel_fallback=True)
    # The profile's channels heard of the request: they hear that nobody has decided it yet, too.
    return sent + _route(req, f"{title_prefix}: {title}", body)


def approval_reminder(request_id):
    """Remind the approvers of a step that nobody has decided for its `remind_after`."""
    return _approval_again(request_id, title_prefix="Reminder", line=lambda step, ago: f"Nobody has decided this for {ago}.")


def approval_escalated(request_id):
    """Tell the step's approvers, now with its fallback, that nobody decided it in time."""
    return _approval_again(
        request_id, title_prefix="Escalated",
        line=lambda step, ago: f"Nobody decided this step in {ago}: it escalated to {step.describe_fallback()}.",
    )


def request_decided(request_id):
    """Tell the requester that their request (or extension) was approved or denied."""
    req = AccessRequest.objects.select_related("profile__target", "requester", "decided_by", "extends").get(pk=request_id)
    if req.status not in (RS.APPROVED, RS.DENIED) or not _first_of_bundle(req, status=req.status):
        return 0
    what = " and ".join(_bundle_titles(req))
    if req.break_glass:
        first = f"Break-glass access to {what} on {req.profile.target} was granted at once; an approver will review its use."
    elif req.decided_by_id:
        first = f"{req.decided_by.label} {req.status} your request for {what} on {req.profile.target}."
    else:
        first = f"The policy approved your request for {what} on {req.profile.target} (rule: {req.auto_rule})."
    if req.extends_id and req.status == RS.APPROVED:
        first += f" Your access now ends {_when(req.extends.expires_at)}."
    comment = f"\nComment: {req.decision_comment}" if req.decision_comment else ""
    kind = "Extension" if req.extends_id else "Request"
    title = f"{kind} {req.status}: {what} for {human_duration(req.duration)}"
    body = f"{first}{comment}\n{_why(req)}\n\n{_link('grants:request_detail', req.pk)}"
    return _tell([req.requester], title, body)


def grant_provisioned(grant_id):
    """Tell the holder that the access is ready, and until when."""
    grant = Grant.objects.select_related("profile__target", "user", "request").get(pk=grant_id)
    if not grant.is_active:
        return 0
    title = f"Access ready: {grant.profile.title} until {_when(grant.expires_at)}"
    body = (
        f"Your access to {grant.profile.title} on {grant.profile.target} is ready until {_when(grant.expires_at)}.\n"
        f"{_why(grant.request)}\n\n"
        f"Show the credentials (once), extend or release it on My access: {_link('grants:my_access')}"
    )
    return _tell([grant.user], title, body)


def expiry_soon(grant_id):
    """Tell the holder that the access ends in a few minutes, with the link to extend it."""
    grant = Grant.objects.select_related("profile__target", "user", "request").get(pk=grant_id)
    if not grant.is_active:
        return 0
    left = human_duration(grant.time_left)
    title = f"Access ends in {left}: {grant.profile.title}"
    body = (
        f"Your access to {grant.profile.title} on {grant.profile.target} ends in {left}, at {_when(grant.expires_at)}.\n"
        f"{_why(grant.request)}\n\n"
        f"Extend it on My access: {_link('grants:my_access')}"
    )
    return _tell([grant.user], title, body)


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
    """Task: `grant_revoked` for each of a revocation batch's grants, in one task (a burst of expiries is one per batch)."""
    sent = 0
    for grant in Grant.objects.select_related("profile__target", "user", "request").filter(
        pk__in=grant_ids, status=Grant.Status.REVOKED
    ).order_by("pk"):
        title = f"Access ended: {grant.profile.title}"
        body = (
            f"Your access to {grant.profile.title} on {grant.profile.target} has ended ({_ENDED.get(grant.end_reason, grant.end_reason)}); "
            f"the target confirmed it gone at {_when(grant.verified_at)}.\n"
            f"{_why(grant.request)}\n\n{_link('grants:grant_detail', grant.pk)}"
        )
        sent += _tell([grant.user], title, body)
    return sent


def break_glass_used(request_id):
    """Tell the profile's approvers and the security channel that break-glass access was taken."""
    req = AccessRequest.objects.select_related("profile__target", "profile__policy", "requester").get(pk=request_id)
    title = f"Break-glass: {req.requester.username} on {req.profile.title}"
    body = (
        f"{req.requester.label} used break-glass access to {req.profile.title} on {req.profile.target} "
        f"for {human_duration(req.duration)}, without approval.\n"
        f"{_why(req)}\n\n"
        f"Review it and close the review with a comment: {_link('grants:reviews')}"
    )
    return _tell(approvers_of(req), title, body) + _tell_security(title, body)


def emergency_login_used(event_id):
    """Tell the security channel that someone signed in with a password at the emergency path, and from where."""
    event = AuditEvent.objects.select_related("actor").get(pk=event_id)
    facts = event.details
    where = facts.get("ip") or "an unknown address"
    browser = facts.get("user_agent") or "no user agent"
    title = f"Emergency login: {event.actor.username} signed in with a password"
    body = (
        f"{event.actor.label} signed in at {facts.get('path') or '/admin/'} with a password, not through the identity "
        f"provider, at {_when(event.created_at)} from {where} ({browser}).\n"
        "If nobody planned this use of the emergency account, deactivate it now and check what it did.\n\n"
        f"Audit event: {_link('admin:audit_auditevent_change', event.pk)}"
    )
    return _tell_security(title, body)


def drift_found(findings):
    """Tell the portal's admins and the security channel what the reconciler found on the targets."""
    if not findings:
        return 0
    lines = [f"- {f.target.name}: {f.external_ref}: {f.get_kind_display()} ({f.action})" for f in findings]
    title = f"Drift: {len(findings)} finding(s)"
    body = (
        "The reconciler or a revocation found access on targets that no grant explains:\n"
        + "\n".join(lines)
        + f"\n\nDetails: {_link('grants:targets')}"
    )
    admins = get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("pk")
    return _tell(admins, title, body) + _tell_security(title, body)


def drift_found_by_id(finding_ids):
    """Task: tell about drift findings made elsewhere (objects found at revocation)."""
    return drift_found(list(DriftFinding.objects.filter(pk__in=finding_ids).select_related("target").order_by("pk")))


def decide_from_slack(click: dict):
    """Approve or deny from a Slack button, as the portal user with the clicker's email, under the lifecycle's rules.

    The message updates to show the outcome; a refusal is told to the
    clicker alone (an ephemeral message) with the lifecycle's reason.
    """
    def tell(text):
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
        tell(f"Nothing was decided: {exc.message}" if exc.permanent else "Nothing was decided: Slack did not say who you are; try again.")
        return None
    actors = list(get_user_model().objects.filter(email__iexact=email, is_active=True)[:2])
    if len(actors) != 1:
        tell(f"Nothing was decided: {'no' if not actors else 'more than one'} active portal account has your Slack email ({email}).")
        return None
    try:
        # A click can come long after the last sign-in: decide with rights read from the IdP recently.
        actor = identity.ensure_recent_identity(actors[0])
    except identity.IdentityError as exc:
        tell(f"Nothing was decided: {exc}")
        return None
    decide = lifecycle.approve_request if click["action"] == "approve" else lifecycle.deny_request
    channel = {"channel": "slack"} if click["action"] == "approve" else {}
    try:
        decide(request_id, actor=actor, comment="via Slack", step=step, **channel)
    except AccessRequest.DoesNotExist:
        tell(f"Request #{request_id} does not exist.")
        return None
    except lifecycle.StepUpRequiredError as exc:
        tell(f"Nothing was decided: {exc} Approve it here: {_link('grants:request_detail', request_id)}")
        return None
    except lifecycle.NotAllowedError as exc:
        tell(f"Nothing was decided: {exc}")
        return None
    except lifecycle.TransitionError as exc:
        tell(f"Nothing was decided: {exc}")
    req = AccessRequest.objects.select_related("profile__target", "profile__policy", "requester", "decided_by", "extends").get(pk=request_id)
    outcome = _outcome(req)
    try:
        title, body = approval_message(req)
        slack.call("chat.update", channel=click["channel"], ts=click["ts"], text=_escape(f"{title}: {outcome}"), blocks=approval_blocks(req, outcome=outcome))
    except slack.SlackError as exc:
        log.warning("Could not update the Slack message of request %s: %s", request_id, exc.message)
    return req.status


# Sending ----------------------------------------------------------------------


def _tell(users, title: str, body: str, *, blocks: list | None = None, channel_fallback: bool = False) -> int:
    """Send one message to each of `users` the way they chose; return how many messages were sent.

    Each who chose email gets an email of their own; with a bot token, each
    who chose Slack gets a direct message. Without a bot token,
    `channel_fallback` posts the message once to the webhook's channel.
    """
    users = list(users)
    chosen = {p.user_id: p for p in NotificationPreference.objects.filter(user__in=users)}
    prefs = {u.pk: chosen.get(u.pk) or NotificationPreference(user=u) for u in users}
    sent = _email(sorted({u.email for u in users if u.email and prefs[u.pk].email}), title, body)
    text = _slack_text(title, body)
    if settings.SLACK_BOT_TOKEN:
        for user in users:
            if prefs[user.pk].slack and user.email:
                sent += deliver({"kind": "slack_dm", "user": user.pk, "text": text, "blocks": blocks})
    elif channel_fallback and settings.SLACK_WEBHOOK_URL and users:
        # Buttons need the bot token (to learn who clicked): the webhook gets the link only.
        sent += deliver({"kind": "webhook", "text": text})
    return sent


def _tell_security(title: str, body: str) -> int:
    sent = _email(list(settings.SECURITY_EMAIL), title, body)
    text = _slack_text(title, body)
    if settings.SLACK_BOT_TOKEN and settings.SLACK_SECURITY_CHANNEL:
        sent += deliver({"kind": "slack_channel", "channel": settings.SLACK_SECURITY_CHANNEL, "text": text})
    elif settings.SLACK_WEBHOOK_URL:
        sent += deliver({"kind": "webhook", "text": text})
    return sent


def _email(addresses: list[str], title: str, body: str) -> int:
    """Send the message to each address in a mail of its own; return how many were sent.

    One mail each: nobody learns the other recipients' addresses, and an
    address the mail server refuses (or that cannot be a header) stops nobody
    else's mail. An address that is not one is skipped, not retried.
    """
    sent = 0
    for address in addresses:
        try:
            validate_email(address)
        except ValidationError:
            log.error("Not sending %r to %r: not an email address.", title, address)
            continue
        sent += deliver({"kind": "email", "to": [address], "subject": f"[jitportal] {title}", "body": body + "\n"})
    return sent


def deliver(message: dict, attempt: int = 1) -> int:
    """Send one message; on failure, schedule another attempt with a growing delay. Return 1 if sent.

    `message` holds only plain values: a retry is a django-q2 schedule,
    which stores its arguments as text.
    """
    try:
        _send(message)
    except Exception as exc:  # noqa: BLE001: one message never stops the others
        error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        if getattr(exc, "permanent", False) or attempt > len(RETRY_DELAYS):
            log.error("Giving up on a %s notification after %s attempt(s): %s", message["kind"], attempt, error)
            return 0
        from django_q.tasks import schedule

        delay = RETRY_DELAYS[attempt - 1]
        schedule("grants.notify.deliver", message, attempt + 1, next_run=timezone.now() + datetime.timedelta(seconds=delay))
        log.warning("A %s notification failed (attempt %s, next in %s s): %s", message["kind"], attempt, delay, error)
        return 0
    return 1


def _send(message: dict):
    kind = message["kind"]
    if kind == "email":
        EmailMessage(message["subject"], message["body"], None, message["to"]).send()
    elif kind == "slack_dm":
        user = get_user_model().objects.get(pk=message["user"])
        slack_id = _slack_id(user)
        if slack_id:
            extra = {"blocks": message["blocks"]} if message.get("blocks") else {}
            slack.call("chat.postMessage", channel=slack_id, text=message["text"], **extra)
    elif kind == "slack_channel":
        slack.call("chat.postMessage", channel=message["channel"], text=message["text"])
    elif kind == "webhook":
        slack.post_webhook({"text": message["text"]})
    elif kind == "route":
        get_channel(message["channel"]).send(message["address"], title=message["title"], body=message["body"], link=message["link"])
    else:
        raise ValueError(f"unknown notification kind {kind!r}")


def _slack_id(user) -> str | None:
    """Return the user's Slack id, found once by their email and kept; None if Slack has no such user."""
    preference, _ = NotificationPreference.objects.get_or_create(user=user)
    if preference.slack_user_id and preference.slack_lookup_email == user.email:
        return preference.slack_user_id
    slack_id = slack.lookup_user_id(user.email)
    if slack_id is None:
        log.info("No Slack user has the email of %s; Slack messages to them are skipped.", user.username)
        return None
    NotificationPreference.objects.filter(pk=preference.pk).update(slack_user_id=slack_id, slack_lookup_email=user.email)
    return slack_id
