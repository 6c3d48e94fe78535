"""Slack, through the portal's Slack app (SLACK_BOT_TOKEN) or, without one, an incoming webhook (SLACK_WEBHOOK_URL).

With the bot token each person who chose Slack gets a direct message (with
Approve and Deny buttons when it asks them to decide), the security channel
(SLACK_SECURITY_CHANNEL) and a profile's channels get posts; invite the app
to those channels. With the webhook alone, messages go to its one channel.
"""

import logging
import re

from django.conf import settings
from django.contrib.auth import get_user_model

from accounts.models import NotificationPreference

from .. import slack
from ..messages import SLACK_TEXT_LIMIT, approval_blocks, slack_text
from .base import Channel, ChannelError

log = logging.getLogger(__name__)


class SlackChannel(Channel):
    kind = "slack"

    @classmethod
    def address_error(cls, address):
        if not re.fullmatch(r"[CG][A-Z0-9]{6,}", address):
            return f"write the channel's id (C0..., under the channel's name, About), not {address!r}"
        return None

    def to_people(self, users, preferences, *, title, body, decide=None, fallback=False):
        text = slack_text(title, body)
        if settings.SLACK_BOT_TOKEN:
            blocks = approval_blocks(decide) if decide is not None else None
            return [
                {"kind": "slack_dm", "user": user.pk, "text": text, "blocks": blocks}
                for user in users
                if preferences[user.pk].slack and user.email
            ]
        if fallback and settings.SLACK_WEBHOOK_URL and users:
            # Buttons need the bot token (to learn who clicked): the webhook gets the link only.
            return [{"kind": "webhook", "text": text}]
        return []

    def to_security(self, *, title, body):
        text = slack_text(title, body)
        if settings.SLACK_BOT_TOKEN and settings.SLACK_SECURITY_CHANNEL:
            return [{"kind": "slack_channel", "channel": settings.SLACK_SECURITY_CHANNEL, "text": text}]
        if settings.SLACK_WEBHOOK_URL:
            return [{"kind": "webhook", "text": text}]
        return []

    def deliver(self, message):
        try:
            if message["kind"] == "slack_dm":
                user = get_user_model().objects.get(pk=message["user"])
                slack_id = _slack_id(user)
                if slack_id:
                    extra = {"blocks": message["blocks"]} if message.get("blocks") else {}
                    slack.call("chat.postMessage", channel=slack_id, text=message["text"], **extra)
            elif message["kind"] == "slack_channel":
                slack.call("chat.postMessage", channel=message["channel"], text=message["text"])
            elif message["kind"] == "webhook":
                slack.post_webhook({"text": message["text"]})
            else:
                super().deliver(message)
        except slack.SlackError as exc:
            raise ChannelError(exc.message, permanent=exc.permanent) from None

    def send(self, address, *, title, body, link):
        text = f"*{slack.escape(title)}*\n{slack.escape(body)}\n<{link}|Open in the portal>"
        try:
            slack.call("chat.postMessage", channel=address, text=text[:SLACK_TEXT_LIMIT])
        except slack.SlackError as exc:
            raise ChannelError(exc.message, permanent=exc.permanent) from None


def _slack_id(user) -> str | None:
    """Return the user's Slack id, found once by their email and kept; None if Slack has no such user."""
    preference, _ = NotificationPreference.objects.get_or_create(user=user)
    if preference.slack_user_id and preference.slack_lookup_email == user.email:
        return preference.slack_user_id
    slack_id = slack.lookup_user_id(user.email)
    if slack_id is None:
        log.info("No Slack user has the email of %s; Slack messages to them are skipped.", user.username)
        return None
    NotificationPreference.objects.filter(pk=preference.pk).update(
        slack_user_id=slack_id, slack_lookup_email=user.email
    )
    return slack_id
