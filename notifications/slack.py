"""Slack: a small client for the Web API and incoming webhooks, and the check of Slack's request signatures.

The endpoint for approval buttons is `views.interactions`.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import requests
from django.conf import settings

TIMEOUT = 10  # seconds for one call to Slack
MAX_SIGNATURE_AGE = 300  # seconds; Slack's advice, against replays of a captured request

# Web API errors that another attempt will not fix.
_PERMANENT = {
    "account_inactive",
    "cannot_dm_bot",
    "cant_update_message",
    "channel_not_found",
    "edit_window_closed",
    "invalid_auth",
    "invalid_blocks",
    "is_archived",
    "message_not_found",
    "missing_scope",
    "msg_too_long",
    "no_text",
    "not_authed",
    "not_in_channel",
    "token_revoked",
    "user_not_found",
    "users_not_found",
}


def escape(text: str) -> str:
    """Escape what Slack's mrkdwn reads as markup, so that user input cannot mention @channel or forge links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackError(Exception):
    """Slack refused or could not be reached; `permanent` when trying again cannot help."""

    def __init__(self, message: str, *, permanent: bool = False, code: str = ""):
        super().__init__(message)
        self.message, self.permanent, self.code = message, permanent, code


def call(method: str, **params) -> dict:
    """Call a Web API method with the bot token and return Slack's answer; raise SlackError.

    Methods that read (`users.*`) take form arguments; the others take JSON.
    """
    if not settings.SLACK_BOT_TOKEN:
        raise SlackError("SLACK_BOT_TOKEN is not set.", permanent=True)
    url = f"{settings.SLACK_API_URL.rstrip('/')}/{method}"
    headers = {"Authorization": f"Bearer {settings.SLACK_BOT_TOKEN}"}
    try:
        if method.startswith("users."):
            response = requests.post(url, data=params, headers=headers, timeout=TIMEOUT)
        else:
            response = requests.post(
                url,
                json=params,
                headers={**headers, "Content-Type": "application/json; charset=utf-8"},
                timeout=TIMEOUT,
            )
    except requests.RequestException as exc:
        raise SlackError(f"Slack {method}: {type(exc).__name__}") from None
    if response.status_code == 429 or response.status_code >= 500:
        raise SlackError(f"Slack {method}: HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise SlackError(f"Slack {method}: HTTP {response.status_code}, not JSON") from None
    if not body.get("ok"):
        error = str(body.get("error") or "unknown_error")
        raise SlackError(f"Slack {method}: {error}", permanent=error in _PERMANENT, code=error)
    return body


def post_webhook(payload: dict) -> None:
    """Post a message to the incoming webhook's channel; raise SlackError."""
    if not settings.SLACK_WEBHOOK_URL:
        raise SlackError("SLACK_WEBHOOK_URL is not set.", permanent=True)
    try:
        response = requests.post(settings.SLACK_WEBHOOK_URL, json=payload, timeout=TIMEOUT)
    except requests.RequestException as exc:
        # Not the exception's text: it names the URL, and the URL is the secret.
        raise SlackError(f"Slack webhook: {type(exc).__name__}") from None
    if response.status_code != 200:
        transient = response.status_code == 429 or response.status_code >= 500
        raise SlackError(f"Slack webhook: HTTP {response.status_code} {response.text[:100]}", permanent=not transient)


def lookup_user_id(email: str) -> str | None:
    """Return the Slack user id with this email (`users.lookupByEmail`), or None if there is none."""
    try:
        return call("users.lookupByEmail", email=email)["user"]["id"]
    except SlackError as exc:
        if exc.code == "users_not_found":
            return None
        raise


def email_of(user_id: str) -> str:
    """Return the email of a Slack user (`users.info`); raise SlackError for bots, deactivated users and none."""
    user = call("users.info", user=user_id)["user"]
    email = (user.get("profile") or {}).get("email") or ""
    if user.get("deleted") or user.get("is_bot") or not email:
        raise SlackError("Your Slack account has no email the portal can use.", permanent=True)
    return email


def signature_refusal(body: bytes, timestamp: str, signature: str, *, now: float | None = None) -> str | None:
    """Return why a request did not come from Slack, or None if its signature and timestamp are good.

    Slack signs `v0:{timestamp}:{body}` with HMAC-SHA256 and the app's
    signing secret; the comparison takes the same time whatever matches.
    """
    secret = settings.SLACK_SIGNING_SECRET
    if not secret:
        return "SLACK_SIGNING_SECRET is not set."
    try:
        sent_at = int(timestamp)
    except ValueError:
        return "Missing or malformed X-Slack-Request-Timestamp."
    expected = "v0=" + hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return "Bad X-Slack-Signature."
    if abs((now or time.time()) - sent_at) > MAX_SIGNATURE_AGE:
        return "The request is too old (X-Slack-Request-Timestamp more than 5 minutes away)."
    return None
