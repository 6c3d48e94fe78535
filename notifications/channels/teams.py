"""A Microsoft Teams channel through an incoming webhook (a Teams Workflows "post to a channel when a webhook
request is received" URL): an Adaptive Card with the message and a button back to the portal."""

import requests

from .base import Channel, ChannelError

TIMEOUT = 10


def card(*, title: str, body: str, link: str) -> dict:
    """Return the message a Teams webhook takes: one Adaptive Card."""
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": True},
                        {"type": "TextBlock", "text": body, "wrap": True},
                    ],
                    "actions": [{"type": "Action.OpenUrl", "title": "Open in the portal", "url": link}],
                },
            }
        ],
    }


class TeamsChannel(Channel):
    kind = "teams"

    @classmethod
    def address_error(cls, address):
        if not address.startswith("https://"):
            return f"write the webhook's https:// URL (got {address[:40]!r})"
        return None

    def send(self, address, *, title, body, link):
        try:
            response = requests.post(address, json=card(title=title, body=body, link=link), timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise ChannelError(f"Teams webhook unreachable: {type(exc).__name__}") from None
        if response.status_code >= 300:
            # 4xx (a deleted flow, a bad URL) will not heal by itself, except 429 (throttled).
            permanent = 400 <= response.status_code < 500 and response.status_code != 429
            raise ChannelError(f"Teams webhook answered {response.status_code}", permanent=permanent)
