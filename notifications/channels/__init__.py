"""Where a profile's (or target's) notifications go besides people: one module per channel kind, behind `Channel`."""

from django.utils.module_loading import import_string

from .base import Channel, ChannelError

REGISTRY = {
    "slack": "grants.channels.slack.SlackChannel",
    "email": "grants.channels.mail.MailingListChannel",
    "teams": "grants.channels.teams.TeamsChannel",
}


def get_channel(kind: str) -> Channel:
    return import_string(REGISTRY[kind])()


__all__ = ["REGISTRY", "Channel", "ChannelError", "get_channel"]
