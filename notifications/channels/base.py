"""The channel interface: whom a channel reaches, the messages it makes for them, and how it sends one.

A message is a dict of plain values (a retry is a django-q2 schedule, which
keeps its arguments as text) with the channel's own `kind` of message; the
sender adds `via`, the channel's kind, and hands it back to `deliver`.
"""


class ChannelError(Exception):
    """The channel refused or could not be reached; `permanent` when trying again cannot help."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.message, self.permanent = message, permanent


class Channel:
    kind = ""

    @classmethod
    def address_error(cls, address: str) -> str | None:
        """Return what is wrong with an address of this channel (for the catalog's `notify`), or None."""
        return None

    def to_people(
        self, users, preferences, *, title: str, body: str, decide=None, fallback: bool = False
    ) -> list[dict]:
        """Return the messages that tell `users` (those of them who chose this channel in `preferences`).

        `decide` is the request the message asks them to decide, for a
        channel that can offer buttons; with `fallback`, a channel that
        cannot reach each person may post once where they all read.
        """
        return []

    def to_security(self, *, title: str, body: str) -> list[dict]:
        """Return the messages that tell the security contacts configured for this channel."""
        return []

    def to_route(self, address: str, *, title: str, body: str, link: str) -> dict:
        """Return the message that announces a request at one of a profile's `notify` addresses."""
        return {"kind": "route", "channel": self.kind, "address": address, "title": title, "body": body, "link": link}

    def deliver(self, message: dict) -> None:
        """Send one message this channel made; raise ChannelError (or any error: it is tried again)."""
        if message["kind"] != "route":
            raise ChannelError(f"{self.kind} cannot send a {message['kind']!r} message", permanent=True)
        self.send(message["address"], title=message["title"], body=message["body"], link=message["link"])

    def send(self, address: str, *, title: str, body: str, link: str) -> None:
        """Post one announcement (title, body, a link back to the portal) to one address."""
        raise NotImplementedError
