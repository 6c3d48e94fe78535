"""Append to and verify the hash chain."""

from __future__ import annotations

import dataclasses
import hashlib
import json

from django.db import connection, transaction
from django.utils import timezone

from .models import AuditEvent

GENESIS = "0" * 64
# Any constant will do: it names the one lock that serialises appends.
_CHAIN_LOCK = 7_270_313


def canonical(*, created_at, actor_id, action, object_type, object_id, details, prev_hash) -> bytes:
    """Return the bytes that an event's hash covers."""
    body = {
        "created_at": created_at.isoformat(timespec="microseconds"),
        "actor_id": actor_id,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "details": details,
        "prev_hash": prev_hash,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def _lock_chain():
    # Two transactions appending at once would both read the same head and
    # fork the chain. On PostgreSQL a transaction-scoped advisory lock
    # serialises appenders until commit; SQLite serialises writers anyway.
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK])


def record(action: str, *, actor=None, obj=None, details=None) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction."""
    return record_many([(action, actor, obj, details)])[0]


def record_many(events) -> list[AuditEvent]:
    """Append several events, in order, inside the caller's transaction.

    `events` holds (action, actor, obj, details) tuples. The chain lock, the
    read of the head and the insert are one round trip each, however many.
    """
    events = list(events)
    if not events:
        return []
    # savepoint=False: inside the caller's transaction a savepoint only costs
    # two round trips; an error here must abort the caller's transaction anyway.
    with transaction.atomic(savepoint=False):
        _lock_chain()
        prev_hash = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first() or GENESIS
        rows = []
        for action, actor, obj, details in events:
            details = json.loads(json.dumps(details or {}, default=str))
            created_at = timezone.now()
            object_type = obj._meta.model_name if obj is not None else ""
            object_id = str(obj.pk) if obj is not None else ""
            actor_id = actor.pk if actor is not None else None
            digest = hashlib.sha256(
                canonical(
                    created_at=created_at, actor_id=actor_id, action=action, object_type=object_type,
                    object_id=object_id, details=details, prev_hash=prev_hash,
                )
            ).hexdigest()
            rows.append(AuditEvent(
                created_at=created_at, actor_id=actor_id, action=action, object_type=object_type,
                object_id=object_id, details=details, prev_hash=prev_hash, hash=digest,
            ))
            prev_hash = digest
        # bulk_create inserts in list order, so ids follow the chain.
        return AuditEvent.objects.bulk_create(rows)


@dataclasses.dataclass
class Verification:
    ok: bool
    count: int
    head: str
    bad_event_id: int | None = None
    reason: str = ""


def verify() -> Verification:
    """Walk the chain in order and report the first event that does not match."""
    with transaction.atomic():
        # One snapshot, however long the walk takes; and in a transaction
        # PostgreSQL streams the server-side cursor instead of building the
        # whole result first (a WITH HOLD cursor, in autocommit).
        return _walk()


def _walk() -> Verification:
    prev = GENESIS
    count = 0
    fields = ("id", "created_at", "actor_id", "action", "object_type", "object_id", "details", "prev_hash", "hash")
    for row in AuditEvent.objects.order_by("id").values_list(*fields).iterator(chunk_size=5000):
        event_id, created_at, actor_id, action, object_type, object_id, details, prev_hash, digest = row
        if prev_hash != prev:
            return Verification(False, count, prev, event_id, "its prev_hash does not match the event before it")
        expected = hashlib.sha256(
            canonical(
                created_at=created_at,
                actor_id=actor_id,
                action=action,
                object_type=object_type,
                object_id=object_id,
                details=details,
                prev_hash=prev_hash,
            )
        ).hexdigest()
        if expected != digest:
            return Verification(False, count, prev, event_id, "its content does not match its hash")
        prev = digest
        count += 1
    return Verification(True, count, prev)


def head_line() -> str:
    """Return one line an outside party can keep: time, event count and head hash of the chain."""
    last = AuditEvent.objects.order_by("-id").values_list("id", "hash").first()
    count = AuditEvent.objects.count()
    now = timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{now} events={count} head_id={last[0] if last else 0} head={last[1] if last else GENESIS}"


def export_head(path: str | None = None) -> str:
    """Append the head line to `path` (or AUDIT_HEAD_FILE), and log it, so a later rewrite of history shows."""
    import logging

    from django.conf import settings

    line = head_line()
    path = path or getattr(settings, "AUDIT_HEAD_FILE", "")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    logging.getLogger("jitportal.audit.head").info(line)
    return line
