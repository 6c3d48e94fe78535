"""The words: each message's title and body, the link back to the portal, and the Slack rendering of a request."""

import datetime

from django.conf import settings
from django.urls import reverse
from django.utils import dateformat, timezone

from grants import policy, selectors
from grants.durations import human_duration
from grants.models import AccessRequest

from . import slack

RS = AccessRequest.Status
SLACK_TEXT_LIMIT = 2900  # a section block holds 3,000 characters


def link(name: str, *args) -> str:
    return settings.PORTAL_URL.rstrip("/") + reverse(name, args=args)


def when(value: datetime.datetime) -> str:
    # In the portal's zone, not the zone of whoever's page view sent it: the readers are other people.
    return dateformat.format(timezone.localtime(value, timezone.get_default_timezone()), "Y-m-d H:i T")


def slack_text(title: str, body: str) -> str:
    return f"*{slack.escape(title)}*\n{slack.escape(body)}"[:SLACK_TEXT_LIMIT]


def why(req: AccessRequest) -> str:
    return f"Justification: {req.justification}" + (f"\nTicket: {req.ticket}" if req.ticket else "")


def bundle_titles(req: AccessRequest) -> list[str]:
    """Return the titles of the profiles asked for together with `req` that share its state."""
    if not req.bundle:
        return [req.profile.title]
    same = AccessRequest.objects.filter(bundle=req.bundle, status=req.status).select_related("profile").order_by("pk")
    return [r.profile.title for r in same]


def first_of_bundle(req: AccessRequest, **same) -> bool:
    """Return whether `req` speaks for its bundle: one message per bundle, not one per member."""
    return not req.bundle or not AccessRequest.objects.filter(bundle=req.bundle, pk__lt=req.pk, **same).exists()


def approval_message(req: AccessRequest) -> tuple[str, str]:
    """Return the title and body of "this request waits for you"."""
    who, profile, target = req.requester.label, req.profile, req.profile.target
    what = " and ".join(bundle_titles(req))
    if req.extends_id:
        title = f"Approve? {req.requester.username}: {profile.title} + {human_duration(req.duration)}"
        first = (
            f"{who} asks to extend {profile.title} on {target} by {human_duration(req.duration)} (it ends "
            f"{when(req.extends.expires_at)})."
        )
    else:
        title = f"Approve? {req.requester.username}: {what} for {human_duration(req.duration)}"
        window = f", from {when(req.starts_at)}" if req.starts_at else ""
        first = f"{who} asks for {what} on {target} for {human_duration(req.duration)}{window}."
    steps = policy.steps_for(profile)
    step = f"\nStep {policy.current_step(req) + 1} of {len(steps)}." if len(steps) > 1 else ""
    asked = "".join(f"\nAsked: {a.user.label}, {a.why}." for a in selectors.on_call_asked(req))
    return title, f"{first}\n{why(req)}{step}{asked}\n\nDecide: {link('grants:request_detail', req.pk)}"


def approval_blocks(req: AccessRequest, *, outcome: str = "") -> list[dict]:
    """Return the Slack blocks of an approval message: its text, then buttons, or the outcome once decided."""
    title, body = approval_message(req)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": slack_text(title, body)}}]
    if outcome:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": slack.escape(outcome)}]})
        return blocks
    # The step travels with the click: if the request has moved on, nothing is decided by mistake.
    value = f"{req.pk}:{req.step}"
    blocks.append(
        {
            "type": "actions",
            "block_id": f"decide-{req.pk}-{req.step}",
            "elements": [
                {
                    "type": "button",
                    "action_id": "approve",
                    "style": "primary",
                    "value": value,
                    "text": {"type": "plain_text", "text": "Approve"},
                },
                {
                    "type": "button",
                    "action_id": "deny",
                    "style": "danger",
                    "value": value,
                    "text": {"type": "plain_text", "text": "Deny"},
                },
                {
                    "type": "button",
                    "action_id": "open",
                    "url": link("grants:request_detail", req.pk),
                    "text": {"type": "plain_text", "text": "Open in the portal"},
                },
            ],
        }
    )
    return blocks


def outcome(req: AccessRequest) -> str:
    """Return what became of the request, for the Slack message that asked about it."""
    if req.status == RS.PENDING:
        last = req.approvals.select_related("approver").order_by("-created_at").first()
        by = f"Approved by {last.approver.label} (step {last.step + 1}); " if last else ""
        return f"{by}the request waits for {policy.waiting_for(req)}."
    by = (
        f" by {req.decided_by.label}"
        if req.decided_by_id
        else (f" by the policy ({req.auto_rule})" if req.auto_rule else "")
    )
    return f"{req.get_status_display()}{by}" + (f": {req.decision_comment}" if req.decision_comment else "") + "."
