"""Send: tell people, the security contacts or a profile's channels through every channel that reaches them.

Each message is sent on its own: one that fails is tried again later
(`RETRY_DELAYS`, a django-q2 schedule per attempt) and does not stop the
others. Nothing here knows a channel: each one (notifications/channels/)
says whom it reaches and sends its own messages.
"""

import datetime
import logging

from django.utils import timezone
from django_q.tasks import schedule

from accounts.models import NotificationPreference

from .channels import REGISTRY, ChannelError, all_channels, get_channel

log = logging.getLogger(__name__)

# Seconds before the 2nd, 3rd, ... attempt of a message that failed; then it is dropped (and logged).
RETRY_DELAYS = (30, 120, 600, 1800)

# Messages scheduled for a retry before they said `via` (grants.notify, one release): their kind says it.
# Remove with grants/notify.py.
_LEGACY_VIA = {"email": "email", "slack_dm": "slack", "slack_channel": "slack", "webhook": "slack"}


def tell(users, title: str, body: str, *, decide=None, fallback: bool = False) -> int:
    """Send the message to each of `users` the way they chose; return how many messages were sent.

    `decide`: the request the message asks them to decide (a channel may add
    buttons); `fallback`: a channel that cannot reach each person may post
    once to a place they all read.
    """
    users = list(users)
    chosen = {p.user_id: p for p in NotificationPreference.objects.filter(user__in=users)}
    preferences = {u.pk: chosen.get(u.pk) or NotificationPreference(user=u) for u in users}
    return sum(
        deliver({**message, "via": channel.kind})
        for channel in all_channels()
        for message in channel.to_people(users, preferences, title=title, body=body, decide=decide, fallback=fallback)
    )


def tell_security(title: str, body: str) -> int:
    """Send the message to the security contacts of every channel (SECURITY_EMAIL, SLACK_SECURITY_CHANNEL, ...)."""
    return sum(
        deliver({**message, "via": channel.kind})
        for channel in all_channels()
        for message in channel.to_security(title=title, body=body)
    )


def tell_routes(routes: dict[str, list[str]], title: str, body: str, link: str) -> int:
    """Post the message at each of a profile's `notify` addresses, with the link back to the portal."""
    sent = 0
    for kind, addresses in sorted(routes.items()):
        if kind not in REGISTRY:
            log.error("Not announcing %r in %s channels: no such channel kind.", title, kind)
            continue
        channel = get_channel(kind)
        for address in addresses:
            sent += deliver({**channel.to_route(address, title=title, body=body, link=link), "via": kind})
    return sent


def deliver(message: dict, attempt: int = 1) -> int:
    """Task: send one message; on failure, schedule another attempt with a growing delay. Return 1 if sent.

    `message` holds only plain values: a retry is a django-q2 schedule,
    which stores its arguments as text.
    """
    try:
        _send(message)
    except Exception as exc:  # noqa: BLE001 (one message never stops the others)
        error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        if getattr(exc, "permanent", False) or attempt > len(RETRY_DELAYS):
            log.error("Giving up on a %s notification after %s attempt(s): %s", message["kind"], attempt, error)
            return 0
        delay = RETRY_DELAYS[attempt - 1]
        schedule(
            "notifications.delivery.deliver",
            message,
            attempt + 1,
            next_run=timezone.now() + datetime.timedelta(seconds=delay),
        )
        log.warning("A %s notification failed (attempt %s, next in %s s): %s", message["kind"], attempt, delay, error)
        return 0
    return 1


def _send(message: dict) -> None:
    via = message.get("via") or (
        message.get("channel") if message["kind"] == "route" else _LEGACY_VIA.get(message["kind"])
    )
    if via not in REGISTRY:
        raise ChannelError(f"unknown notification kind {message['kind']!r}", permanent=True)
    get_channel(via).deliver(message)
