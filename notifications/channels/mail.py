"""A mailing list: one mail to the list's address."""

from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.core.validators import validate_email

from .base import Channel


class MailingListChannel(Channel):
    kind = "email"

    @classmethod
    def address_error(cls, address):
        try:
            validate_email(address)
        except ValidationError:
            return f"{address!r} is not an email address"
        return None

    def send(self, address, *, title, body, link):
        EmailMessage(f"[jitportal] {title}", f"{body}\n\n{link}\n", None, [address]).send()
