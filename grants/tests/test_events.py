"""The core announces what happened after commit; subscribers hear of it then, and only of what was committed."""

import logging

import pytest
from django.db import transaction

from grants import events


@pytest.fixture
def heard(monkeypatch):
    """Subscribe a recorder to request_decided, alone (the notifications' own handler is set aside)."""
    monkeypatch.setitem(events._handlers, "request_decided", [])
    heard = []
    events.subscribe("request_decided", lambda request_id: heard.append(request_id))
    return heard


def test_subscribers_hear_of_an_event_once_the_transaction_commits(db, heard, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        events.announce("request_decided", request_id=7)
        assert heard == []  # not before commit
    assert heard == [7]


def test_nobody_hears_of_what_was_rolled_back(db, heard, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            events.announce("request_decided", request_id=7)
            raise RuntimeError("the decision failed")
    assert heard == []


def test_a_failing_subscriber_stops_neither_the_others_nor_the_work_after_commit(
    db, heard, django_capture_on_commit_callbacks, caplog
):
    def broken(request_id):
        raise ConnectionError("the broker is down")

    events._handlers["request_decided"].insert(0, broken)
    after = []
    with django_capture_on_commit_callbacks(execute=True):
        events.announce("request_decided", request_id=7)
        transaction.on_commit(lambda: after.append("provision"))
    assert heard == [7] and after == ["provision"]
    assert any(r.levelno == logging.ERROR and "request_decided" in r.getMessage() for r in caplog.records)


def test_an_unknown_event_or_a_missing_fact_is_refused_at_once():
    with pytest.raises(ValueError, match="unknown event"):
        events.announce("request_approved", request_id=7)
    with pytest.raises(TypeError, match="request_decided takes request_id"):
        events.announce("request_decided", grant_id=7)
    with pytest.raises(ValueError, match="unknown event"):
        events.subscribe("request_approved", print)


def test_the_notifications_subscribe_to_every_event_the_core_announces():
    assert all(events._handlers[event] for event in events.EVENTS)
    assert set(events.route_kinds()) == {"email", "slack", "teams"}
