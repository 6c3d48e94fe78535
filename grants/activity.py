"""What each grant was used for, as far as the target itself kept it.

Two sources fill `Grant.activity`:

- at revocation, a connector that can read what the target kept about the
  grant's account (PostgreSQL's pg_stat_statements, MariaDB's
  performance_schema) leaves a digest in `connector.activity` while it
  revokes; the lifecycle hands the digests of the grants it marks revoked to
  `store_digests`. A failed read is a digest too ("unavailable: why"): it
  never stops a revocation;
- an SSH host's session guard reports each session (start, end, source
  address, exit status, recording hash) to the SSH connector's endpoint,
  which calls `record_ssh_session`.

The digest is size-capped (the top MAX_STATEMENTS statements by total time,
plus totals over all of them) and carries its one-line `summary`, which the
report's two CSV paths read as it is. Nothing here claims more than the
target kept: no statement texts where the target keeps none, no usage at all
for kinds that keep nothing (AWS, see the README).
"""

from __future__ import annotations

import hashlib
import json

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction

import audit

from .connectors.digest import MAX_SESSIONS, SessionReportError, clean_session, summary
from .models import Grant


def store_digests(grants: list[Grant], digests: dict[int, dict]) -> None:
    """Keep on each grant the digest its connector read at revocation (one UPDATE for the batch).

    Called by the lifecycle inside the transaction that marks them revoked,
    whose `grant.revoked` events then name each digest's summary and hash
    (`audit_details`). Grants without a digest (their kind keeps nothing)
    are left as they are. The digest joins what the grant already holds
    (sessions its host reported).
    """
    changed = []
    for grant in grants:
        digest = digests.get(grant.pk)
        if digest is None:
            continue
        merged = {**(grant.activity or {}), **digest}
        merged["summary"] = summary(merged)
        grant.activity = merged
        changed.append(grant)
    if not changed:
        return
    Grant.objects.bulk_update(changed, ["activity"])


def audit_details(grant: Grant) -> dict:
    """Return what a grant's `grant.revoked` event says of its activity: summary and hash, or nothing."""
    if not grant.activity:
        return {}
    return {"activity": grant.activity.get("summary", ""), "activity_sha256": digest_hash(grant.activity)}


def digest_hash(activity: dict) -> str:
    """Return the SHA-256 of an activity digest's canonical JSON (what the audit event names)."""
    text = json.dumps(activity, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record_ssh_session(*, target, grant_id: int, report: dict) -> Grant:
    """Record one session an SSH host's guard reported on the grant it belongs to, with an audit event.

    `report` is already authenticated as coming from a host of `target` and
    checked for shape (the SSH connector's endpoint does both). The guard
    reports a session at its start and again at its end (same session id):
    the second completes the first. A report the grant already holds as it
    is (the guard retried, or a replay inside the signature's window) is a no-op.
    """
    with transaction.atomic():
        grant = (
            Grant.objects.select_for_update(of=("self",))
            .select_related("profile__target")
            .filter(pk=grant_id, profile__target=target)
            .first()
        )
        if grant is None:
            raise SessionReportError(f"No grant {grant_id} on target {target.name}.", http_status=404)
        if grant.starts_at is None:
            raise SessionReportError(f"Grant {grant_id} was never provisioned.", http_status=409)
        activity = dict(grant.activity or {})
        sessions = list(activity.get("sessions") or [])
        session = clean_session(report)
        known = next((i for i, s in enumerate(sessions) if s.get("session_id") == session["session_id"]), None)
        if known is not None:
            if all(sessions[known].get(k) == v for k, v in session.items()):
                return grant  # the guard sent it again (a retry, or a replay inside the window)
            # The session's end, after its start: fields only added or completed.
            sessions[known] = {**sessions[known], **session}
        elif len(sessions) < MAX_SESSIONS:
            activity["sessions_total"] = int(activity.get("sessions_total", len(sessions))) + 1
            sessions.append(session)
        elif "ended_at" not in session:
            # Past the cap only counted, once: at its start (its end report would count it again).
            activity["sessions_total"] = int(activity.get("sessions_total", len(sessions))) + 1
        activity["sessions"] = sessions
        activity.setdefault("source", "ssh session guard")
        activity["summary"] = summary(activity)
        grant.activity = activity
        grant.save(update_fields=["activity"])
        audit.record("grant.session_reported", obj=grant, details={"target": target.name, **session})
    return grant


def activity_rows(grant: Grant) -> list[dict]:
    """Return a grant's activity as rows for its CSV: its statements, the sessions, then totals and what is missing."""
    activity = grant.activity or {}
    blank = dict.fromkeys(ACTIVITY_FIELDS, None)
    rows = []
    for s in activity.get("statements") or []:
        rows.append({**blank, "kind": activity.get("unit", "statement"), "database": s.get("database"),
                     "statement": s.get("query"), "calls": s.get("calls"), "rows": s.get("rows"),
                     "total_ms": s.get("total_ms")})  # fmt: skip
    for s in activity.get("open_sessions") or []:
        rows.append({**blank, "kind": "open at revocation", "database": s.get("database"),
                     "started_at": s.get("started_at"), "source": s.get("client")})  # fmt: skip
    for s in activity.get("sessions") or []:
        rows.append({**blank, "kind": "session", "host": s.get("host"), "started_at": s.get("started_at"),
                     "ended_at": s.get("ended_at"), "source": s.get("source"), "exit_status": s.get("exit_status"),
                     "recording_sha256": s.get("recording_sha256"), "note": s.get("ended_by")})  # fmt: skip
    totals = activity.get("totals")
    if totals:
        rows.append({**blank, "kind": "totals", "statement": f"{totals.get('statements', 0)} in all",
                     "calls": totals.get("calls"), "rows": totals.get("rows"),
                     "total_ms": totals.get("total_ms")})  # fmt: skip
    if activity.get("unavailable"):
        rows.append({**blank, "kind": "unavailable", "note": activity["unavailable"]})
    for row in rows:
        row["grant_id"] = grant.pk
        row["source_of_record"] = activity.get("source", "")
    return rows


# The keys of `activity_rows` (reports/columns.py names and documents them as CSV columns).
ACTIVITY_FIELDS = ("grant_id", "source_of_record", "kind", "database", "statement", "calls", "rows", "total_ms",
                   "host", "started_at", "ended_at", "source", "exit_status", "recording_sha256", "note")  # fmt: skip
