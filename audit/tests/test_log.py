"""The trail is append-only and hash-chained."""

import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.db.utils import DatabaseError

import audit
from audit.log import GENESIS, verify
from audit.models import AuditEvent

from .conftest import past_the_trail_triggers


@pytest.fixture
def events(db, django_user_model):
    user = django_user_model.objects.create_user("ana")
    return [audit.record("test.event", actor=user, obj=user, details={"n": n}) for n in range(3)]


def test_events_chain_from_genesis(events):
    assert events[0].prev_hash == GENESIS
    assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]
    result = verify()
    assert result.ok and result.count == 3 and result.head == events[-1].hash


@pytest.mark.postgres_only("the trail's append-only triggers are PostgreSQL's (audit migration 0002)")
def test_database_refuses_to_change_or_delete_an_event(events):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=events[1].pk).update(action="nothing.happened")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=events[1].pk).delete()


@pytest.mark.postgres_only("TRUNCATE and its trigger are PostgreSQL's (audit migration 0004)")
def test_database_refuses_to_truncate_the_trail(events):
    with pytest.raises(DatabaseError, match=r"append-only \(TRUNCATE refused\)"), transaction.atomic():
        with connection.cursor() as cur:
            # Run the foreign-key checks of the fixture's inserts now: PostgreSQL will not truncate a table
            # with checks pending, which would refuse before the trigger is asked.
            cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cur.execute("TRUNCATE audit_auditevent")
    assert AuditEvent.objects.count() == 3


# Details as callers hand them over: what JSON and jsonb do to each of these
# must not make an intact chain look broken.
ODD_DETAILS = [
    {"user": "Zoë Müller", "note": "日本語 and an emoji 😀"},
    {"big": 1e16, "bigger": 2.5e20, "small": 1.5e-07, "ratio": 0.1, "zero": -0.0, "one": 1.0},
    {"control": "tab\there\nnew line \x01 \x1f", "delete": "\x7f", "quotes": 'say "hi" \\ back'},
    {"huge_int": 2**70, "negative": -(2**63) - 1, "nested": {"b": [1, {"z": None, "a": True}], "a": []}},
    {"10.0.0.1": "an address key", "version": "2.5", "list": [1.5, "x.5", 3]},
    {},
]


def test_events_whatever_their_details_verify_and_a_change_to_any_of_them_shows(db, django_user_model):
    user = django_user_model.objects.create_user("ana")
    recorded = [
        audit.record("test.odd", actor=user if n % 2 else None, obj=user, details=details)
        for n, details in enumerate(ODD_DETAILS)
    ]
    result = verify()
    assert result.ok, result.reason
    assert result.count == len(ODD_DETAILS)
    for event in recorded:
        with connection.cursor() as cur, past_the_trail_triggers(cur):
            cur.execute("UPDATE audit_auditevent SET action = 'test.edited' WHERE id = %s", [event.pk])
            result = verify()
            cur.execute("UPDATE audit_auditevent SET action = 'test.odd' WHERE id = %s", [event.pk])
        assert (result.ok, result.bad_event_id) == (False, event.pk)
    assert verify().ok


def test_verification_names_the_first_rewritten_event(events):
    # A superuser can get past the trigger (here: replica mode skips
    # ordinary triggers); the chain still tells.
    with connection.cursor() as cur, past_the_trail_triggers(cur):
        cur.execute("UPDATE audit_auditevent SET details = '{\"n\": 99}' WHERE id = %s", [events[1].pk])
    result = verify()
    assert not result.ok
    assert result.bad_event_id == events[1].pk
    assert "content" in result.reason


def test_verify_command_reports_an_intact_chain_with_count_and_head(events, capsys):
    call_command("audit", "verify")
    out = capsys.readouterr().out
    assert f"Audit chain intact: 3 events, head {events[-1].hash}." in out


def test_verify_command_names_the_first_bad_event_and_fails(events):
    with connection.cursor() as cur, past_the_trail_triggers(cur):
        cur.execute("DELETE FROM audit_auditevent WHERE id = %s", [events[1].pk])
    with pytest.raises(CommandError, match=f"broken at event #{events[2].pk}: its prev_hash does not match"):
        call_command("audit", "verify")


def test_the_head_line_can_be_appended_to_a_file(events, tmp_path):
    path = tmp_path / "heads.txt"
    call_command("audit", "head", "--file", str(path))
    call_command("audit", "head", "--file", str(path))
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(f"events=3 head_id={events[-1].pk} head={events[-1].hash}")


def test_a_fork_is_refused_by_the_database(events):
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditEvent.objects.create(
            created_at=events[0].created_at, action="x", prev_hash=events[1].prev_hash, hash="f" * 64
        )


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_never_fork_the_chain(django_user_model):
    errors = []

    def write(n):
        try:
            for i in range(15):
                with transaction.atomic():
                    audit.record("test.concurrent", details={"writer": n, "i": i})
        except Exception as exc:  # noqa: BLE001 (whatever fails is reported below)  # pragma: no cover
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = verify()
    assert result.ok and result.count == 90
