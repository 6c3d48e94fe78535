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


def test_verify_command_reports_an_intact_chain_with_count_and_head(events, capsys):
    from django.core.management import call_command

    call_command("audit", "verify")
    out = capsys.readouterr().out
    assert f"Audit chain intact: 3 events, head {events[-1].hash}." in out


def test_verify_command_names_the_first_bad_event_and_fails(events):
    from django.core.management import CommandError, call_command

    with connection.cursor() as cur:
        cur.execute("SET LOCAL session_replication_role = replica")
        cur.execute("DELETE FROM audit_auditevent WHERE id = %s", [events[1].pk])
        cur.execute("SET LOCAL session_replication_role = DEFAULT")
    with pytest.raises(CommandError, match=f"broken at event #{events[2].pk}: its prev_hash does not match"):
        call_command("audit", "verify")


def test_the_head_line_can_be_appended_to_a_file(events, tmp_path):
    from django.core.management import call_command

    path = tmp_path / "heads.txt"
    call_command("audit", "head", "--file", str(path))
    call_command("audit", "head", "--file", str(path))
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(f"events=3 head_id={events[-1].pk} head={events[-1].hash}")


def test_a_fork_is_refused_by_the_database(events):
    from django.db import IntegrityError

    with pytest.raises(IntegrityError), transaction.atomic():
        AuditEvent.objects.create(
            created_at=events[0].created_at, action="x", prev_hash=events[1].prev_hash, hash="f" * 64
        )


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_never_fork_the_chain(django_user_model):
    import threading

    errors = []

    def write(n):
        try:
            for i in range(15):
                with transaction.atomic():
                    audit.record("test.concurrent", details={"writer": n, "i": i})
        except Exception as exc:  # pragma: no cover - reported below
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
