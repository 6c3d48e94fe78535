"""Signed exported heads: what the chain alone cannot show (a cut tail, a re-hashed suffix), they do."""

import base64
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command
from django.db import connection

import audit
from audit.checks import check_signing_key
from audit.heads import parse_head
from audit.log import canonical, export_head, verify
from audit.models import AuditEvent

from .conftest import past_the_trail_triggers

BASE = Path(__file__).resolve().parents[2]


def pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
def signing_key(settings, tmp_path):
    key = Ed25519PrivateKey.generate()
    settings.AUDIT_SIGNING_KEY = pem(key)
    settings.AUDIT_HEAD_FILE = str(tmp_path / "heads.txt")
    return key


@pytest.fixture
def public_key_file(signing_key, tmp_path, capsys):
    """What `audit pubkey` prints, kept by whoever checks the heads."""
    call_command("audit", "pubkey")
    path = tmp_path / "audit-heads.pub"
    path.write_text(capsys.readouterr().out)
    return str(path)


@pytest.fixture
def chain(db, django_user_model, signing_key):
    """Ten events, with a signed head exported after the fourth and after the tenth."""
    user = django_user_model.objects.create_user("ana")
    events = [audit.record("test.event", actor=user, obj=user, details={"n": n}) for n in range(4)]
    export_head()
    events += [audit.record("test.event", actor=user, obj=user, details={"n": n}) for n in range(4, 10)]
    export_head()
    return events


def as_superuser(sql, params=()):
    # A superuser (or the table's owner, who may disable the triggers) gets past the append-only guard.
    with connection.cursor() as cur, past_the_trail_triggers(cur):
        cur.execute(sql, params)


def rehash_from(event, details):
    """Rewrite `event`'s details and re-hash it and every event after it, as someone who can write the database can."""
    prev = event.prev_hash
    for row in AuditEvent.objects.filter(pk__gte=event.pk).order_by("id"):
        if row.pk == event.pk:
            row.details = details
        digest = hashlib.sha256(
            canonical(
                created_at=row.created_at,
                actor_id=row.actor_id,
                action=row.action,
                object_type=row.object_type,
                object_id=row.object_id,
                details=row.details,
                prev_hash=prev,
            )
        ).hexdigest()
        as_superuser(
            "UPDATE audit_auditevent SET details = "
            f"%s{'::jsonb' if connection.vendor == 'postgresql' else ''}, prev_hash = %s, hash = %s WHERE id = "
            "%s",
            [json.dumps(row.details), prev, digest, row.pk],
        )
        prev = digest


def verify_command(*args):
    call_command("audit", "verify", *args)


def test_a_suffix_rehashed_from_a_middle_event_verifies_alone_but_not_against_the_exported_heads(
    chain, public_key_file, settings
):
    rehash_from(chain[6], {"n": 6, "approved_by": "nobody"})
    # The chain alone cannot tell: this is what the heads are for.
    assert verify().ok

    with pytest.raises(CommandError) as caught:
        verify_command("--public-key", public_key_file)
    message = str(caught.value)
    last = parse_head(Path(settings.AUDIT_HEAD_FILE).read_text().splitlines()[1])
    assert f"does not match the head exported at {last.at} (events=10, head_id={chain[9].pk})" in message
    assert f"{settings.AUDIT_HEAD_FILE}, line 2" in message
    assert "the chain was rewritten up to there" in message


def test_a_cut_tail_verifies_alone_but_not_against_the_exported_heads(chain, public_key_file):
    as_superuser("DELETE FROM audit_auditevent WHERE id > %s", [chain[6].pk])
    result = verify()
    assert result.ok and result.count == 7

    with pytest.raises(
        CommandError,
        match=r"\(events=10, head_id=\d+\).*the chain ends after 7 events, fewer than "
        r"the head counts: events were removed from its end",
    ):
        verify_command("--public-key", public_key_file)


def test_a_changed_middle_event_is_caught_with_or_without_heads(chain, public_key_file):
    as_superuser("UPDATE audit_auditevent SET details = '{\"n\": 99}' WHERE id = %s", [chain[2].pk])
    with pytest.raises(CommandError, match=f"broken at event #{chain[2].pk}: its content does not match its hash"):
        verify_command("--heads", "")
    with pytest.raises(CommandError, match=f"broken at event #{chain[2].pk}: its content does not match its hash"):
        verify_command("--public-key", public_key_file)


@pytest.mark.parametrize("chunk", [1, 3, 4, 10])
def test_the_walk_finds_the_same_in_whatever_chunks_it_reads_the_chain(chain, public_key_file, monkeypatch, chunk):
    monkeypatch.setattr(audit.log, "_CHUNK", chunk)
    verify_command("--public-key", public_key_file)
    as_superuser("UPDATE audit_auditevent SET details = '{\"n\": 99}' WHERE id = %s", [chain[4].pk])
    with pytest.raises(CommandError, match=f"broken at event #{chain[4].pk}: its content does not match its hash"):
        verify_command("--public-key", public_key_file)
    rehash_from(chain[4], {"n": 99})
    with pytest.raises(CommandError, match=r"does not match the head exported at .* \(events=10, "):
        verify_command("--public-key", public_key_file)
    as_superuser("DELETE FROM audit_auditevent WHERE id > %s", [chain[3].pk])
    with pytest.raises(CommandError, match="the chain ends after 4 events"):
        verify_command("--public-key", public_key_file)


def test_a_head_edited_or_signed_with_another_key_to_match_a_rewritten_chain_fails_its_signature(
    chain, public_key_file, settings
):
    rehash_from(chain[6], {"n": 6, "approved_by": "nobody"})
    new_head = AuditEvent.objects.order_by("-id").first()
    heads = Path(settings.AUDIT_HEAD_FILE)
    first, last = heads.read_text().splitlines()
    edited = last.replace(chain[9].hash, new_head.hash)
    heads.write_text(f"{first}\n{edited}\n")
    with pytest.raises(
        CommandError,
        match=r"\(events=10, .*line 2\): its signature was not made with the private "
        "key of this public key: the head was altered or forged",
    ):
        verify_command("--public-key", public_key_file)

    forged = parse_head(edited).signed_with(Ed25519PrivateKey.generate())
    heads.write_text(f"{first}\n{forged.line}\n")
    with pytest.raises(CommandError, match="its signature was not made"):
        verify_command("--public-key", public_key_file)


def test_an_intact_chain_meets_its_signed_heads_checked_with_the_printed_public_key(chain, public_key_file, capsys):
    verify_command("--public-key", public_key_file)
    out = capsys.readouterr().out
    assert f"Audit chain intact: 10 events, head {chain[9].hash}." in out
    assert "It meets 2 heads exported in" in out and "(events=10)" in out
    assert "Signed: 2 heads, every signature good." in out
    assert "not checked" not in out and "unsigned" not in out


def test_the_scheduled_export_signs_each_head_over_its_time_count_id_and_hash(chain, signing_key, settings):
    lines = Path(settings.AUDIT_HEAD_FILE).read_text().splitlines()
    head = parse_head(lines[1])
    assert (head.count, head.head_id, head.hash) == (10, chain[9].pk, chain[9].hash)
    assert head.signed_by(signing_key.public_key())
    # Any other count, id, hash or time makes the signature fail.
    others = {"count": 11, "head_id": chain[8].pk, "hash": chain[8].hash, "at": "2000-01-01T00:00:00Z"}
    for field, value in others.items():
        assert not dataclasses.replace(head, **{field: value}).signed_by(signing_key.public_key())


def test_without_a_signing_key_heads_are_exported_unsigned_and_verify_says_so(db, settings, tmp_path, capsys):
    settings.AUDIT_SIGNING_KEY = ""
    settings.AUDIT_HEAD_FILE = str(tmp_path / "heads.txt")
    audit.record("test.event")
    line = export_head()
    assert " sig=" not in line and line.endswith(
        f"events=1 head_id={AuditEvent.objects.get().pk} head={AuditEvent.objects.get().hash}"
    )

    verify_command()
    out = capsys.readouterr().out
    assert "It meets 1 head exported in" in out
    assert "1 head unsigned: anyone who can write" in out
    with pytest.raises(CommandError, match="No signing key: set AUDIT_SIGNING_KEY_FILE"):
        call_command("audit", "pubkey")
    assert check_signing_key()[0].id == "audit.W003"


def test_verify_without_heads_warns_that_a_cut_tail_would_not_show(db, settings, capsys):
    settings.AUDIT_HEAD_FILE = ""
    audit.record("test.event")
    verify_command()
    out = capsys.readouterr().out
    assert "Audit chain intact: 1 events" in out
    assert "Checked against no exported heads, so a cut tail or a suffix re-hashed" in out


def test_signed_heads_without_a_public_key_to_check_them_are_reported_as_unchecked(chain, settings, capsys):
    settings.AUDIT_SIGNING_KEY = ""
    verify_command()
    assert "2 heads signed, but the signatures were not checked: give --public-key FILE" in capsys.readouterr().out


def test_a_malformed_heads_file_or_public_key_is_named_in_a_clear_error(chain, settings, tmp_path):
    heads = Path(settings.AUDIT_HEAD_FILE)
    heads.write_text(heads.read_text() + "# a comment is fine\n\nevents=10 head=abc\n")
    with pytest.raises(CommandError, match=r"heads.txt, line 5: not a head line; expected 'YYYY-MM-DDTHH:MM:SSZ "):
        verify_command()
    with pytest.raises(CommandError, match="Cannot read the heads file .*missing.txt: No such file"):
        verify_command("--heads", str(tmp_path / "missing.txt"))
    bad_key = tmp_path / "bad.pub"
    bad_key.write_text("not a key\n")
    with pytest.raises(CommandError, match="bad.pub: not an Ed25519 public key"):
        verify_command("--heads", "", "--public-key", str(bad_key))


def test_check_deploy_is_content_once_heads_are_signed(signing_key):
    assert check_signing_key() == []


def manage(*args, **env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AUDIT_", "DATABASE_URL"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE, env={**clean, **env}, capture_output=True, text=True
    )


def test_the_signing_key_comes_from_a_file_or_the_environment_and_a_bad_one_stops_the_portal(tmp_path):
    key = Ed25519PrivateKey.generate()
    expected = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
        .strip()
    )
    path = tmp_path / "audit-signing.pem"
    path.write_text(pem(key))
    result = manage("audit", "pubkey", AUDIT_SIGNING_KEY_FILE=str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    result = manage("audit", "pubkey", AUDIT_SIGNING_KEY=base64.b64encode(raw).decode())
    assert result.stdout.strip() == expected, result.stderr

    result = manage("check", AUDIT_SIGNING_KEY="not-a-key")
    assert result.returncode != 0
    assert "AUDIT_SIGNING_KEY (or AUDIT_SIGNING_KEY_FILE): not a PEM Ed25519 private key" in result.stderr
