"""Stream the trail out: every event, in order and at least once, to each sink in AUDIT_SINKS.

Each sink has its own cursor (`SinkCursor.last_event_id`, the last event it
has): a delivery sends the events after it, in id order, and moves it only
once the sink took the batch, so a sink that is down catches up when it
returns and a worker that dies halfway leaves the cursor where it was (the
batch goes again). Ids follow the chain: appends hold the chain lock until
commit (audit.log), so an event is never committed behind one already read.
"""

from __future__ import annotations

import datetime
import json
import logging
import time

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Q
from django.utils import timezone
from django.utils.module_loading import import_string

from ..models import AuditEvent, SinkCursor
from .base import FIELDS, Sink, SinkError, as_record

# A plain registry from kind to class, as the connectors and channels have.
KINDS = {
    "syslog": "audit.sinks.syslog.SyslogSink",
    "webhook": "audit.sinks.webhook.WebhookSink",
    "s3": "audit.sinks.s3.S3Sink",
}

logger = logging.getLogger("jitportal.audit.sinks")

__all__ = ["KINDS", "Sink", "SinkError", "configured_sinks", "deliver", "deliver_all", "sink_status"]


def configured_sinks() -> list[Sink]:
    """Return a Sink for each entry of AUDIT_SINKS; raise ImproperlyConfigured on a bad one."""
    sinks, names = [], set()
    entries = settings.AUDIT_SINKS
    if not isinstance(entries, list):
        raise ImproperlyConfigured('AUDIT_SINKS must be a JSON list of objects (README, "Audit streaming").')
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("name") or entry.get("kind") not in KINDS:
            raise ImproperlyConfigured(
                f"AUDIT_SINKS[{i}] needs a name and a kind ({', '.join(KINDS)}): {json.dumps(entry)[:200]}"
            )
        name = str(entry["name"])
        if name in names or len(name) > 64:
            raise ImproperlyConfigured(f"AUDIT_SINKS: sink names must be unique and at most 64 characters: {name!r}.")
        names.add(name)
        sinks.append(import_string(KINDS[entry["kind"]])(name, entry))
    return sinks


def _backoff(failures: int) -> datetime.timedelta:
    return datetime.timedelta(seconds=min(2 ** min(failures, 20), settings.AUDIT_SINK_RETRY_MAX))


def _cursor_row(name: str) -> None:
    if not SinkCursor.objects.filter(name=name).exists():
        try:
            with transaction.atomic():
                SinkCursor.objects.create(name=name)
        except IntegrityError:
            pass  # another worker made it first


def deliver_batch(sink: Sink) -> int | None:
    """Send the next batch to `sink` while holding its cursor; return how many events went (None: not now).

    On PostgreSQL the cursor row stays locked (select_for_update) from
    reading the batch until the cursor has moved, so another worker skips
    this sink meanwhile rather than sending the same events beside us.
    SQLite (demo mode) opens every transaction with the write lock of the
    whole database (settings: IMMEDIATE), and holding that while a sink
    answers would stop every writer: there a worker leases the row instead,
    for as long as a task may live (Q_CLUSTER timeout), so the lease of a
    worker that died ends when its task would have been killed anyway.
    """
    _cursor_row(sink.name)
    if connection.vendor == "postgresql":
        with transaction.atomic():
            cursor = SinkCursor.objects.select_for_update(skip_locked=True).filter(name=sink.name).first()
            return None if cursor is None else _send_next(sink, cursor)
    now = timezone.now()
    lease = now + datetime.timedelta(seconds=settings.Q_CLUSTER.get("timeout", 120))
    free = Q(locked_until__isnull=True) | Q(locked_until__lt=now)
    if not SinkCursor.objects.filter(free, name=sink.name).update(locked_until=lease):
        return None
    try:
        return _send_next(sink, SinkCursor.objects.get(name=sink.name))
    finally:
        SinkCursor.objects.filter(name=sink.name, locked_until=lease).update(locked_until=None)


def _send_next(sink: Sink, cursor: SinkCursor) -> int | None:
    now = timezone.now()
    if cursor.retry_at is not None and cursor.retry_at > now:
        return None
    events = list(
        AuditEvent.objects.filter(id__gt=cursor.last_event_id)
        .order_by("id")
        .values(*FIELDS, "actor__username")[: sink.batch_size]
    )
    if not events:
        return 0
    cursor.attempted_at = now
    try:
        sink.send([as_record(e) for e in events])
    except Exception as exc:  # noqa: BLE001 - any failure of a sink is recorded and retried, never raised
        cursor.failures += 1
        cursor.retry_at = now + _backoff(cursor.failures)
        cursor.last_error = f"{exc}"[:1000] or exc.__class__.__name__
        cursor.save(update_fields=["attempted_at", "failures", "retry_at", "last_error"])
        logger.warning(
            "audit sink %s: delivery after #%s failed (%s%s), retry at %s",
            sink.name,
            cursor.last_event_id,
            cursor.last_error,
            ", permanent" if getattr(exc, "permanent", False) else "",
            cursor.retry_at.isoformat(),
        )
        return None
    cursor.last_event_id = events[-1]["id"]
    cursor.delivered_at = timezone.now()
    cursor.failures, cursor.retry_at, cursor.last_error = 0, None, ""
    cursor.save(update_fields=["last_event_id", "delivered_at", "attempted_at", "failures", "retry_at", "last_error"])
    return len(events)


def deliver(sink: Sink, *, budget: float | None = None) -> int:
    """Send `sink` batches until it has every event, a batch fails, or `budget` seconds are spent."""
    budget = settings.AUDIT_SINK_BUDGET if budget is None else budget
    deadline = time.monotonic() + budget
    total = 0
    while True:
        sent = deliver_batch(sink)
        if not sent:
            return total
        total += sent
        if sent < sink.batch_size or time.monotonic() > deadline:
            return total


def deliver_all() -> dict[str, int]:
    """Deliver to every configured sink (the scheduled task); one sink failing does not hold up the others."""
    return {sink.name: deliver(sink) for sink in configured_sinks()}


_last_nudge = [float("-inf")]


def nudge() -> None:
    """Queue a delivery soon after an append, at most one every AUDIT_SINK_NUDGE seconds from this process.

    The minute schedule delivers anyway; this only shortens the wait, for the
    price of one queued task every few seconds while events are being written.
    """
    now = time.monotonic()
    if not settings.AUDIT_SINKS or not settings.AUDIT_SINK_NUDGE or now - _last_nudge[0] < settings.AUDIT_SINK_NUDGE:
        return
    _last_nudge[0] = now
    from django_q.tasks import async_task  # noqa: PLC0415 - django-q's app must be ready, and only sinks need it

    async_task("audit.sinks.deliver_all", group="audit_sinks")


def sink_status() -> list[dict]:
    """Return each configured sink's name, kind, cursor and lag (events it has not received), in one query."""
    sinks = configured_sinks()
    if not sinks:
        return []
    cursors = {c.name: c for c in SinkCursor.objects.filter(name__in=[s.name for s in sinks])}
    last = {s.name: cursors[s.name].last_event_id if s.name in cursors else 0 for s in sinks}
    lag = AuditEvent.objects.aggregate(
        **{f"s{i}": Count("pk", filter=Q(id__gt=last[s.name])) for i, s in enumerate(sinks)}
    )
    return [
        {
            "name": s.name,
            "kind": s.config["kind"],
            "cursor": cursors.get(s.name),
            "last_event_id": last[s.name],
            "lag": lag[f"s{i}"],
        }
        for i, s in enumerate(sinks)
    ]
