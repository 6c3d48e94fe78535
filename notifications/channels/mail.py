"""Email: a mail of its own to each person who chose it and to each security address, and to mailing lists."""

import logging

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.core.validators import validate_email

from .base import Channel

log = logging.getLogger(__name__)


class MailChannel(Channel):
    kind = "email"

    @classmethod
    def address_error(cls, address):
        try:
            validate_email(address)
        except ValidationError:
            return f"{address!r} is not an email address"
        return None

    def to_people(self, users, preferences, *, title, body, decide=None, fallback=False):
        return _mails(sorted({u.email for u in users if u.email and preferences[u.pk].email}), title, body)

    def to_security(self, *, title, body):
        return _mails(list(settings.SECURITY_EMAIL), title, body)

    def deliver(self, message):
        if message["kind"] == "email":
            EmailMessage(message["subject"], message["body"], None, message["to"]).send()
        else:
            super().deliver(message)

    def send(self, address, *, title, body, link):
        EmailMessage(f"[jitportal] {title}", f"{body}\n\n{link}\n", None, [address]).send()


def _mails(addresses: list[str], title: str, body: str) -> list[dict]:
    """Return one mail for each address.

    One mail each: nobody learns the other recipients' addresses, and an
    address the mail server refuses (or that cannot be a header) stops nobody
    else's mail. An address that is not one is skipped, not retried.
    """
    mails = []
    for address in addresses:
        if MailChannel.address_error(address):
            log.error("Not sending %r to %r: not an email address.", title, address)
            continue
        mails.append({"kind": "email", "to": [address], "subject": f"[jitportal] {title}", "body": body + "\n"})
    return mails
