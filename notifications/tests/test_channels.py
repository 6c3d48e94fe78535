"""A channel is a module and a registry line: people, the security contacts and routes reach it with no other change."""

import ast

import pytest
from django_q.models import Schedule

from notifications import delivery
from notifications.channels import REGISTRY, Channel, ChannelError

SENT = []


class PagerChannel(Channel):
    """A channel the portal does not have: it pages everyone, and fails when told to."""

    kind = "pager"
    failure = None

    def to_people(self, users, preferences, *, title, body, decide=None, fallback=False):
        return [{"kind": "page", "to": user.username, "title": title} for user in users]

    def to_security(self, *, title, body):
        return [{"kind": "page", "to": "on-call security", "title": title}]

    def deliver(self, message):
        if PagerChannel.failure:
            raise PagerChannel.failure
        if message["kind"] == "page":
            SENT.append((message["to"], message["title"]))
        else:
            super().deliver(message)

    def send(self, address, *, title, body, link):
        SENT.append((address, f"{title} {link}"))


@pytest.fixture
def pager(monkeypatch, settings):
    settings.SECURITY_EMAIL, settings.SLACK_BOT_TOKEN, settings.SLACK_WEBHOOK_URL = [], "", ""
    monkeypatch.setitem(REGISTRY, "pager", f"{__name__}.PagerChannel")
    monkeypatch.setattr(PagerChannel, "failure", None)
    SENT.clear()
    return SENT


def test_a_new_channel_reaches_people_security_and_routes_through_the_registry_alone(pager, ana, mailoutbox):
    assert delivery.tell([ana], "Access ready", "body") == 2  # the mail ana chose by default, and the page
    assert delivery.tell_security("Break-glass", "body") == 1
    assert delivery.tell_routes({"pager": ["db-team"]}, "Approve?", "body", "https://jit.example.test/r/1") == 1
    assert pager == [
        ("ana", "Access ready"), ("on-call security", "Break-glass"), ("db-team", "Approve? https://jit.example.test/r/1"),
    ]  # fmt: skip
    assert [m.to for m in mailoutbox] == [["ana@example.com"]]


def test_a_channel_error_is_tried_again_later_unless_permanent(pager, ana):
    PagerChannel.failure = ChannelError("pager gateway down")
    assert delivery.deliver({"kind": "page", "to": "ana", "title": "t", "via": "pager"}) == 0
    message, attempt = ast.literal_eval(Schedule.objects.get(func="notifications.delivery.deliver").args)
    assert (message["via"], attempt) == ("pager", 2)
    Schedule.objects.filter(func="notifications.delivery.deliver").delete()
    PagerChannel.failure = ChannelError("no such pager", permanent=True)
    assert delivery.deliver({"kind": "page", "to": "ana", "title": "t", "via": "pager"}) == 0
    assert not Schedule.objects.filter(func="notifications.delivery.deliver").exists()
    PagerChannel.failure = None
    assert delivery.deliver(message, attempt) == 1 and pager == [("ana", "t")]


def test_a_message_for_a_channel_that_is_gone_is_dropped_not_retried(pager, db):
    assert delivery.deliver({"kind": "page", "to": "ana", "title": "t", "via": "beeper"}) == 0
    assert not Schedule.objects.filter(func="notifications.delivery.deliver").exists()
