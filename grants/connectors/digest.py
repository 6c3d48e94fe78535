"""Activity digests as connectors build them: plain dicts, size-capped, each with its one-line summary.

Pure functions: connectors never touch the portal's database; grants/activity.py stores what they return.
"""

from __future__ import annotations

import datetime

from django.utils import timezone


class SessionReportError(ValueError):
    """A session report that cannot be recorded: `message` says why, `http_status` the answer."""

    def __init__(self, message: str, *, http_status: int = 400):
        super().__init__(message)
        self.message = message
        self.http_status = http_status


MAX_STATEMENTS = 50
MAX_QUERY_CHARS = 2000
MAX_SESSIONS = 200


def statements_digest(
    source: str,
    rows: list[dict],
    *,
    totals: dict,
    open_sessions: list[dict] = (),
    note: str = "",
    unit: str = "statement",
) -> dict:
    """Return a digest of statement statistics: the MAX_STATEMENTS rows with the most total time, and `totals`.

    `rows` hold database, query, calls, rows, total_ms (any order); `totals`
    statements, calls, rows, total_ms over every row the target had, shown
    or not; `open_sessions` the account's sessions the revocation found (and ended).
    """
    top = sorted(rows, key=lambda r: (-float(r["total_ms"]), str(r.get("query", ""))))[:MAX_STATEMENTS]
    digest = {
        "source": source,
        "read_at": timezone.now().isoformat(),
        "statements": [
            {
                "database": str(r.get("database") or ""),
                "query": _clip(str(r.get("query") or ""), MAX_QUERY_CHARS),
                "calls": int(r["calls"]),
                "rows": int(r.get("rows") or 0),
                "total_ms": round(float(r["total_ms"]), 3),
            }
            for r in top
        ],
        "totals": {
            "statements": int(totals.get("statements", 0)),
            "calls": int(totals.get("calls", 0)),
            "rows": int(totals.get("rows", 0)),
            "total_ms": round(float(totals.get("total_ms", 0)), 3),
        },
        "open_sessions": [clean_session(s) for s in open_sessions][:MAX_SESSIONS],
    }
    if note:
        digest["note"] = note
    if unit != "statement":
        digest["unit"] = unit  # what a row is, where the target keeps no statement texts
    digest["summary"] = summary(digest)
    return digest


def unavailable(source: str, why: str, *, open_sessions: list[dict] = ()) -> dict:
    """Return the digest of a read that failed or that the target cannot give: "unavailable: why"."""
    digest = {
        "source": source,
        "read_at": timezone.now().isoformat(),
        "unavailable": _clip(" ".join(str(why).split()), 500),
        "open_sessions": [clean_session(s) for s in open_sessions][:MAX_SESSIONS],
    }
    digest["summary"] = summary(digest)
    return digest


def summary(activity: dict) -> str:
    """Return the one line the reports show: "12 statements, 340 calls, 2 sessions", "unavailable: why", or ""."""
    if not activity:
        return ""
    parts = []
    totals = activity.get("totals")
    if totals is not None:
        parts.append(_count(totals.get("statements", 0), activity.get("unit", "statement")))
        parts.append(_count(totals.get("calls", 0), "call"))
    sessions = activity.get("sessions") or []
    if sessions or activity.get("sessions_total"):
        parts.append(_count(activity.get("sessions_total", len(sessions)), "session"))
    if activity.get("open_sessions"):
        parts.append(f"{len(activity['open_sessions'])} open at revocation")
    if activity.get("unavailable"):
        parts.append("unavailable: " + activity["unavailable"])
    return ", ".join(parts)


SESSION_FIELDS = (
    "session_id",
    "host",
    "started_at",
    "ended_at",
    "source",
    "database",
    "client",
    "exit_status",
    "ended_by",
    "recording_sha256",
)


def clean_session(session: dict) -> dict:
    out = {}
    for key in SESSION_FIELDS:
        value = session.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, datetime.datetime):
            value = value.isoformat()
        out[key] = value if isinstance(value, int) and not isinstance(value, bool) else _clip(str(value), 200)
    return out


def _count(n, word: str) -> str:
    n = int(n)
    return f"{n} {word}{'' if n == 1 else 's'}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
