"""A Slack channel, posted to by the portal's Slack app (SLACK_BOT_TOKEN; invite the app to the channel)."""

import re

from .. import slack
from .base import Channel, ChannelError


class SlackChannel(Channel):
    kind = "slack"

    @classmethod
    def address_error(cls, address):
        if not re.fullmatch(r"[CG][A-Z0-9]{6,}", address):
            return f"write the channel's id (C0..., under the channel's name, About), not {address!r}"
        return None

    def send(self, address, *, title, body, link):
        text = f"*{slack.escape(title)}*\n{slack.escape(body)}\n<{link}|Open in the portal>"
        try:
            slack.call("chat.postMessage", channel=address, text=text[:2900])
        except slack.SlackError as exc:
            raise ChannelError(exc.message, permanent=exc.permanent) from None
