"""The endpoint for Slack's Approve and Deny buttons.

Slack posts button clicks to `/slack/interactions`. The view checks Slack's
request signature and timestamp and hands the click to a task (Slack wants
an answer within three seconds); `notifications.tasks.decide_from_slack`
then decides through the lifecycle under the same rules as the pages.
"""

import json
import logging

from django.conf import settings
from django.http import Http404, HttpResponse, HttpResponseBadRequest, HttpResponseForbidden
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from django_q.tasks import async_task

from . import slack

log = logging.getLogger(__name__)

DECISIONS = ("approve", "deny")


@csrf_exempt  # Slack cannot send our CSRF token; its signature stands in for it
@require_POST
def interactions(request):
    """Take a click on an Approve or Deny button from Slack and hand it to a task."""
    if not settings.SLACK_SIGNING_SECRET:
        raise Http404
    body = request.body  # read before request.POST, which consumes the stream
    refusal = slack.signature_refusal(
        body, request.headers.get("X-Slack-Request-Timestamp", ""), request.headers.get("X-Slack-Signature", "")
    )
    if refusal:
        log.warning("Refused a Slack interaction: %s", refusal)
        return HttpResponseForbidden(refusal)
    try:
        payload = json.loads(request.POST["payload"])
    except (KeyError, ValueError):
        return HttpResponseBadRequest("No interaction payload.")
    if payload.get("type") != "block_actions":
        return HttpResponse()  # the portal uses button clicks only
    action = next((a for a in payload.get("actions") or [] if a.get("action_id") in DECISIONS), None)
    if action is None:
        return HttpResponse()  # e.g. the "Open in the portal" link button
    container = payload.get("container") or {}
    click = {
        "action": action["action_id"],
        "value": str(action.get("value", "")),
        "user": str((payload.get("user") or {}).get("id", "")),
        "channel": str(container.get("channel_id") or (payload.get("channel") or {}).get("id", "")),
        "ts": str(container.get("message_ts") or (payload.get("message") or {}).get("ts", "")),
    }
    async_task("notifications.tasks.decide_from_slack", click, group="decide_from_slack")
    return HttpResponse()
