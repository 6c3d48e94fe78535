"""The ways the portal reaches people: one module per channel kind, behind `Channel`, in one registry.

A new channel is a module here and a line in `REGISTRY`: it says whom it
reaches (people who chose it, the security contacts, a profile's `notify`
addresses) and how it sends one message; nothing else changes.
"""

from django.utils.module_loading import import_string

from .base import Channel, ChannelError

# Kind -> class. The order is the order in which one event's messages go out.
REGISTRY = {
    "email": "notifications.channels.mail.MailChannel",
    "slack": "notifications.channels.slack.SlackChannel",
    "teams": "notifications.channels.teams.TeamsChannel",
}


def channel_class(kind: str) -> type[Channel]:
    return import_string(REGISTRY[kind])


def get_channel(kind: str) -> Channel:
    return channel_class(kind)()


def all_channels() -> list[Channel]:
    return [get_channel(kind) for kind in REGISTRY]


__all__ = ["REGISTRY", "Channel", "ChannelError", "all_channels", "channel_class", "get_channel"]
