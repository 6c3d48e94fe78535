"""The trail is append-only and hash-chained."""

import pytest
from django.db import connection, transaction
from django.db.utils import DatabaseError

import audit
from audit.log import GENESIS, verify
from audit.models import AuditEvent


@pytest.fixture
def events(db, django_user_model):
    user = django_user_model.objects.create_user("ana")
    return [audit.record("test.event", actor=user, obj=user, details={"n": n}) for n in range(3)]


def test_events_chain_from_genesis(events):
    assert events[0].prev_hash == GENESIS
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    result = verify()
    assert result.ok and result.count == 3 and result.head == events[-1].hash


def test_database_refuses_to_change_or_delete_an_event(events):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=events[1].pk).update(action="nothing.happened")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=events[1].pk).delete()


def test_verification_names_the_first_rewritten_event(events):
    # A superuser can get past the trigger (here: replica mode skips
    # ordinary triggers); the chain still tells.
    with connection.cursor() as cur:
        cur.execute("SET LOCAL session_replication_role = replica")
        cur.execute("UPDATE audit_auditevent SET details = '{\"n\": 99}' WHERE id = %s", [events[1].pk])
        cur.execute("SET LOCAL session_replication_role = DEFAULT")
    result = verify()
    assert not result.ok
    assert result.bad_event_id == events[1].pk
    assert "content" in result.reason
