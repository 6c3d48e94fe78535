from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    """One thing that happened, by whom, to what; never changed after it is written.

    `hash` covers the canonical content and `prev_hash`, so rewriting or
    removing any event breaks the chain from there on.
    """

    created_at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64, unique=True)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} {self.object_type}#{self.object_id}"


class SinkCursor(models.Model):
    """How far one configured sink (AUDIT_SINKS) has received the trail: every event up to `last_event_id`.

    Its row is the sink's lock: a delivery holds it (select_for_update; a
    lease in `locked_until` on SQLite) from reading the batch until the
    cursor moves, so two workers never send the same batch at once.
    """

    name = models.CharField(max_length=64, unique=True)
    last_event_id = models.BigIntegerField(default=0)
    delivered_at = models.DateTimeField(null=True, blank=True)
    attempted_at = models.DateTimeField(null=True, blank=True)
    # Consecutive failed deliveries, and when the next one may be tried (backoff).
    failures = models.PositiveIntegerField(default=0)
    retry_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # SQLite only, which has no row locks: until when a worker holds this sink (audit.sinks.deliver_batch).
    locked_until = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.name} at #{self.last_event_id}"
