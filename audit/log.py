"""Append to and verify the hash chain, and export its head."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import hashlib
import json
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from json.encoder import encode_basestring_ascii

import msgspec
import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from .heads import Head, signing_key
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


def _as_postgresql_returns_it(number: str) -> float | int:
    # jsonb keeps a number as numeric, which prints without an exponent and
    # has no negative zero: 1e+16 comes back as 10000000000000000, an int to
    # json, and -0.0 as 0.0. The hash must cover what verification reads back.
    if "e+" in number or "E+" in number:
        return int(decimal.Decimal(number))
    value = float(number)
    return 0.0 if value == 0 else value


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
        rows, texts = [], []
        for action, actor, obj, details in events:
            text = json.dumps(details or {}, default=str)
            details = json.loads(text, parse_float=_as_postgresql_returns_it)
            created_at = timezone.now()
            object_type = obj._meta.model_name if obj is not None else ""
            object_id = str(obj.pk) if obj is not None else ""
            actor_id = actor.pk if actor is not None else None
            digest = hashlib.sha256(
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
            rows.append(
                AuditEvent(
                    created_at=created_at,
                    actor_id=actor_id,
                    action=action,
                    object_type=object_type,
                    object_id=object_id,
                    details=details,
                    prev_hash=prev_hash,
                    hash=digest,
                )
            )
            texts.append(text)
            prev_hash = digest
        _insert(rows, texts)
        created = rows
    if settings.AUDIT_SINKS:
        from .sinks import nudge  # noqa: PLC0415 - sinks imports this module

        transaction.on_commit(nudge)
    return created


# One statement for any number of rows, its text always the same (psycopg parses it once): one array per
# column, sent in binary, so no value is quoted or escaped on the way.
_INSERT_SQL = (
    "INSERT INTO {table} (created_at, actor_id, action, object_type, object_id, details, prev_hash, hash)"
    " SELECT created_at, actor_id, action, object_type, object_id, details::jsonb, prev_hash, hash"
    " FROM unnest(%b::timestamptz[], %b::int8[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[],"
    " %b::text[]) WITH ORDINALITY"
    " AS e(created_at, actor_id, action, object_type, object_id, details, prev_hash, hash, n)"
    " ORDER BY n RETURNING id"
)


def _insert(rows: list[AuditEvent], texts: list[str]) -> None:
    """Insert `rows` in list order (ids follow the chain) and set their ids; `texts` are their details as JSON.

    On PostgreSQL one INSERT of the rows' arrays, bound by the server:
    Django's bulk_create binds in Python (client-side), and quoting a
    burst's details and hashes cost more CPU than hashing them. `texts` is
    the JSON the details were read back from, so the stored jsonb is what
    the hash covers. Other databases take bulk_create's way.
    """
    if connection.vendor != "postgresql":
        AuditEvent.objects.bulk_create(rows)
        return
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(
            _INSERT_SQL.format(table=connection.ops.quote_name(AuditEvent._meta.db_table)),
            [
                [row.created_at for row in rows],
                [row.actor_id for row in rows],
                [row.action for row in rows],
                [row.object_type for row in rows],
                [row.object_id for row in rows],
                texts,
                [row.prev_hash for row in rows],
                [row.hash for row in rows],
            ],
        )
        ids = [pk for (pk,) in cursor.fetchall()]
    for row, pk in zip(rows, ids, strict=True):
        row.pk = pk
        row._state.adding = False
        row._state.db = connection.alias


@dataclasses.dataclass
class Verification:
    ok: bool
    count: int
    head: str
    bad_event_id: int | None = None
    reason: str = ""
    # The exported head that failed (its signature, or the chain is shorter or different there).
    bad_head: Head | None = None
    heads_matched: int = 0
    unsigned: int = 0
    # Whether the heads' signatures were checked against a public key.
    signatures_checked: bool = False


def verify(heads: Iterable[Head] = (), *, public_key: Ed25519PublicKey | None = None) -> Verification:
    """Walk the chain in order and report the first event that does not match, or the first head it does not meet.

    The chain alone shows an event changed or removed in its middle, but not
    a cut tail or a suffix re-hashed from some event on: for each of
    `heads`, the chain must hold at least `count` events and the one at
    that position must be #`head_id` with that hash. With `public_key`, a
    signed head whose signature that key's private half did not make fails.
    """
    heads = sorted(heads, key=lambda h: h.count)
    summary = {"unsigned": sum(1 for h in heads if not h.signature), "signatures_checked": public_key is not None}
    for h in heads:
        if public_key is not None and h.signature and not h.signed_by(public_key):
            reason = (
                "its signature was not made with the private key of this public key: the head was altered or forged"
            )
            return Verification(False, 0, GENESIS, reason=reason, bad_head=h, **summary)
        if h.count == 0 and (h.head_id, h.hash) != (0, GENESIS):
            return Verification(
                False,
                0,
                GENESIS,
                reason="a head of no events has head_id=0 and the genesis hash",
                bad_head=h,
                **summary,
            )
    heads = [h for h in heads if h.count > 0]
    # In a transaction SQLite reads one snapshot and the ORM's cursor streams on PostgreSQL. Each chunk of
    # the PostgreSQL walk reads its own: events are only ever added at the end, and a walk sees those too.
    with transaction.atomic():
        walk = _walk_postgresql if connection.vendor == "postgresql" else _walk
        result = walk(heads)
    return dataclasses.replace(result, **summary)


class _Heads:
    """The heads the walk must meet, in order of their count."""

    def __init__(self, heads: list[Head]):
        self.heads = heads
        self.matched = 0
        self.next_count = heads[0].count if heads else -1

    def check(self, count: int, event_id: int, digest: str, prev: str) -> Verification | None:
        """Check the heads at position `count` (the event just verified); return the failure, if any."""
        while self.next_count == count:
            h = self.heads[self.matched]
            if (h.head_id, h.hash) != (event_id, digest):
                reason = (
                    f"event number {count} of the chain is #{event_id} with hash {digest}, but the head says "
                    f"#{h.head_id} with hash {h.hash}: the chain was rewritten up to there"
                )
                return Verification(False, count, prev, event_id, reason, bad_head=h, heads_matched=self.matched)
            self.matched += 1
            self.next_count = self.heads[self.matched].count if self.matched < len(self.heads) else -1
        return None

    def end(self, count: int, prev: str) -> Verification:
        if self.matched < len(self.heads):
            h = self.heads[self.matched]
            reason = (
                f"the chain ends after {count} events, fewer than the head counts: events were removed from its end"
            )
            return Verification(False, count, prev, None, reason, bad_head=h, heads_matched=self.matched)
        return Verification(True, count, prev, heads_matched=self.matched)


def _walk(heads: list[Head]) -> Verification:
    """Walk through the ORM: the reference, and what SQLite (demo mode) uses."""
    prev = GENESIS
    count = 0
    stops = _Heads(heads)
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
        if failed := stops.check(count, event_id, digest, prev):
            return failed
    return stops.end(count, prev)


# The columns as `canonical()` renders them, made by PostgreSQL: no datetime
# objects, and `details` as jsonb's text. A chunk at a time, by id, each one
# short index range scan, so the walk can read an event again through the
# ORM on the same connection (psycopg serialises that with the reader thread).
_CHUNK_SQL = """
SELECT id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'), actor_id, action,
       object_type, object_id, details::text, prev_hash, hash
FROM audit_auditevent WHERE id > %s ORDER BY id LIMIT %s
"""
_CHUNK = 10_000


class _Fraction(Exception):
    pass


def _refuse_fraction(text):
    # msgspec writes some floats unlike Python's json (1e16, not 1e+16): those events take json's own way.
    raise _Fraction


def _walk_postgresql(heads: list[Head]) -> Verification:
    """Walk as `_walk` does, a few times as fast; an event it cannot confirm gets `_walk`'s own check.

    `details` is decoded and re-encoded with sorted keys by msgspec where
    that gives exactly the bytes of Python's json (printable ASCII, no
    fractions), else by json itself. Speed only, never leniency: an event
    passes only if the bytes hash to its stored hash, and that hash was made
    from `canonical()`'s bytes, so they are those bytes; an event that does
    not pass is read again through the ORM and checked by `canonical()`
    before it is called broken.
    """
    encode_sorted = msgspec.json.Encoder(order="sorted").encode
    decode = msgspec.json.Decoder(float_hook=_refuse_fraction).decode
    encode_exact = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode
    loads, quote, sha256 = json.loads, encode_basestring_ascii, hashlib.sha256
    prev = GENESIS
    count = 0
    stops = _Heads(heads)
    chunk = _CHUNK
    connection.ensure_connection()
    raw = connection.connection

    def fetch(after):
        # psycopg's connection is thread-safe; this thread and ours share its transaction.
        with raw.cursor() as cur:
            return cur.execute(_CHUNK_SQL, [after, chunk]).fetchall()

    # While this thread hashes a chunk, PostgreSQL reads the next one.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-verify") as reader:
        pending = reader.submit(fetch, 0)
        while True:
            rows = pending.result()
            if len(rows) == chunk:
                pending = reader.submit(fetch, rows[-1][0])
            for event_id, at, actor_id, action, object_type, object_id, details, prev_hash, digest in rows:
                if prev_hash != prev:
                    reason = "its prev_hash does not match the event before it"
                    return Verification(False, count, prev, event_id, reason)
                try:
                    if not details.isascii() or "\x7f" in details:
                        raise _Fraction
                    details = encode_sorted(decode(details)).decode()
                except _Fraction:
                    details = encode_exact(loads(details))
                # prev_hash is the hash of the event before, which passed this check: 64 hex digits, no quoting needed.
                text = (
                    f'{{"action":{quote(action)},"actor_id":{"null" if actor_id is None else actor_id},'
                    f'"created_at":"{at}","details":{details},"object_id":{quote(object_id)},'
                    f'"object_type":{quote(object_type)},"prev_hash":"{prev_hash}"}}'
                )
                if sha256(text.encode()).hexdigest() != digest and not _matches_its_hash(event_id):
                    return Verification(False, count, prev, event_id, "its content does not match its hash")
                prev = digest
                count += 1
                if stops.next_count == count and (failed := stops.check(count, event_id, digest, prev)):
                    return failed
            if len(rows) < chunk:
                return stops.end(count, prev)


def _matches_its_hash(event_id: int) -> bool:
    row = (
        AuditEvent.objects.filter(pk=event_id)
        .values("created_at", "actor_id", "action", "object_type", "object_id", "details", "prev_hash", "hash")
        .first()
    )
    if row is None:
        return False
    digest = row.pop("hash")
    return hashlib.sha256(canonical(**row)).hexdigest() == digest


def current_head() -> Head:
    """Return the chain's head now: time, event count, id and hash of the last event, signed if a key is configured."""
    # One statement, one snapshot: the count and the last event agree while
    # others append (appends are serialised, so a snapshot sees a prefix).
    with connection.cursor() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM audit_auditevent), id, hash FROM audit_auditevent ORDER BY id DESC LIMIT 1"
        )
        row = cur.fetchone()
    count, head_id, digest = row if row else (0, 0, GENESIS)
    head = Head(at=timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ"), count=count, head_id=head_id, hash=digest)
    key = signing_key()
    return head.signed_with(key) if key else head


def head_line() -> str:
    """Return one line an outside party can keep: time, event count, last id and hash, and the signature."""
    return current_head().line


def export_head(path: str | None = None) -> str:
    """Append the head line to `path` (or AUDIT_HEAD_FILE), and log it, so a later rewrite of history shows."""
    line = head_line()
    path = path or getattr(settings, "AUDIT_HEAD_FILE", "")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    logging.getLogger("jitportal.audit.head").info(line)
    return line


@dataclasses.dataclass
class CopyVerification:
    ok: bool
    count: int = 0
    first_id: int | None = None
    last_id: int | None = None
    # The hash the copy starts after: GENESIS when it starts at the chain's first event.
    starts_after: str = GENESIS
    head: str = GENESIS
    repeats: int = 0
    line_no: int | None = None
    reason: str = ""
    # Each event's hash, and its position in the chain (known when the copy starts at the first event).
    hashes: dict[int, str] = dataclasses.field(default_factory=dict, repr=False)
    positions: dict[int, int] = dataclasses.field(default_factory=dict, repr=False)

    def meets(self, head: Head) -> str:
        """Return why the copy does not meet `head` ("" if it does, or if the head is outside the copy)."""
        if head.count == 0 or not self.count or head.head_id < self.first_id or head.head_id > self.last_id:
            return ""
        if head.head_id not in self.hashes:
            return f"the copy has no event #{head.head_id}, which the head names"
        if self.hashes[head.head_id] != head.hash:
            return f"the copy's event #{head.head_id} has hash {self.hashes[head.head_id]}, the head says {head.hash}"
        if self.positions and self.positions[head.head_id] != head.count:
            return (
                f"event #{head.head_id} is number {self.positions[head.head_id]} of the copy, the head counts "
                f"{head.count}: events are missing before it"
            )
        return ""


def verify_copy(lines: Iterable[str]) -> CopyVerification:
    """Check an exported copy of the trail (JSON Lines of sink records) on its own, without the database.

    Each record's hash must cover its content and the record before it, and
    the ids must rise. A record seen before with the same hash is a repeat
    (sinks deliver at least once) and is skipped; with another hash it fails.
    A line `{"events": [...]}` (a webhook body kept as is) counts as its records.
    """
    result = CopyVerification(ok=True)
    seen = result.hashes
    prev = None

    def fail(line_no, reason):
        return dataclasses.replace(result, ok=False, line_no=line_no, reason=reason)

    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_float=_as_postgresql_returns_it)
        except ValueError as exc:
            return fail(line_no, f"not JSON: {exc}")
        records = obj["events"] if isinstance(obj, dict) and isinstance(obj.get("events"), list) else [obj]
        for record in records:
            try:
                event_id, digest, prev_hash = int(record["id"]), record["hash"], record["prev_hash"]
                content = canonical(
                    created_at=datetime.datetime.fromisoformat(record["created_at"]),
                    actor_id=record["actor_id"],
                    action=record["action"],
                    object_type=record["object_type"],
                    object_id=record["object_id"],
                    details=record["details"],
                    prev_hash=prev_hash,
                )
            except (KeyError, TypeError, ValueError) as exc:
                return fail(line_no, f"not an audit record ({exc.__class__.__name__}: {exc})")
            if event_id in seen:
                if seen[event_id] != digest:
                    return fail(line_no, f"event #{event_id} appears twice with different hashes")
                result.repeats += 1
                continue
            if hashlib.sha256(content).hexdigest() != digest:
                return fail(line_no, f"event #{event_id}: its content does not match its hash")
            if prev is None:
                result.first_id, result.starts_after = event_id, prev_hash
            elif event_id < result.last_id:
                return fail(line_no, f"event #{event_id} comes after #{result.last_id}: the copy is out of order")
            elif prev_hash != prev:
                return fail(
                    line_no,
                    f"event #{event_id}: its prev_hash does not match #{result.last_id} before it "
                    "(an event is missing or was changed)",
                )
            seen[event_id] = digest
            if result.starts_after == GENESIS:
                result.positions[event_id] = result.count + 1
            prev = digest
            result.last_id, result.head = event_id, digest
            result.count += 1
    return result
