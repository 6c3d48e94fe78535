"""Who may see which report, each report's CSV columns, and the streamed, audited download.

The CSV columns of every report are defined here and nowhere else; the
README's "For auditors" section documents them. Headers are stable: add
columns at the end, never rename or reorder.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import itertools
import json
import logging

from django.core.exceptions import EmptyResultSet, PermissionDenied
from django.db import NotSupportedError, connections, models, transaction
from django.db.models import Case, F, Func, Value, When
from django.db.models.functions import Concat, Left, NullIf
from django.db.models.lookups import In
from django.http import StreamingHttpResponse
from django.utils import timezone

import audit
import grants.selectors as selectors

logger = logging.getLogger(__name__)

ALL, OWN, DECIDED = "all", "own", "decided"
AUDITOR_PERMISSION = "audit.view_auditevent"


def scope_for(user, report: str, *, subject: str | None = None) -> str:
    """Return how much of `report` `user` may see, or raise PermissionDenied.

    ALL: auditors (the `audit.view_auditevent` permission, e.g. the auditors
    group) and superusers. OWN: anyone, their own access history and their
    own timeline (`subject` is the timeline's username). DECIDED: approvers,
    the decisions they took part in.
    """
    if user.has_perm(AUDITOR_PERMISSION):
        return ALL
    if report == "access" or (report == "timeline" and subject == user.username):
        return OWN
    if report == "decisions" and selectors.may_decide(user):
        return DECIDED
    raise PermissionDenied("Only auditors see this report.")


def may_see(user, report: str, *, subject: str | None = None) -> bool:
    try:
        scope_for(user, report, subject=subject)
    except PermissionDenied:
        return False
    return True


# CSV columns ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Column:
    header: str  # the stable CSV header
    field: str  # the name on the selector's rows: a field, a lookup or an annotation
    doc: str  # what it holds, for people reading the file


ACCESS_HISTORY = (
    Column("grant_id", "pk", "Grant number."),
    Column("request_id", "request_id", "Number of the request that made the grant."),
    Column("user", "user__username", "Who the access was for (username)."),
    Column("user_email", "user__email", "Their email address."),
    Column("target", "profile__target__name", "Target (catalog name)."),
    Column("profile", "profile__name", "Access profile (catalog name)."),
    Column("requested_at", "requested_at", "When the request was made."),
    Column("decision", "decision", "`approved` (by a person), `auto_approved` (a policy rule) or `break_glass`."),
    Column("decided_by", "request__decided_by__username", "Who gave the last approval; empty when a rule or break-glass approved."),
    Column("auto_rule", "request__auto_rule", "The policy rule that approved it (`break-glass` for break-glass), else empty."),
    Column("decided_at", "decided_at", "When it was approved."),
    Column("justification", "request__justification", "The requester's justification."),
    Column("ticket", "request__ticket", "Ticket reference, if given."),
    Column("started_at", "starts_at", "When the access was provisioned; empty if it never was."),
    Column("expires_at", "expires_at", "When it was due to expire."),
    Column("ended_at", "ended_at", "When a fresh read of the target confirmed it gone (`verified_at`, else `revoked_at`); empty while it may still exist."),
    Column("duration_seconds", "actual_duration", "Seconds from `started_at` to `ended_at`; empty until both are known."),
    Column("status", "status", "Grant status: `scheduled`, `active`, `revoking`, `revoked` or `failed`."),
    Column("end_reason", "end_reason", "`expired`, `released`, `revoked` (by an admin) or `policy`; empty while it lives."),
    Column("ended_by", "ended_by__username", "Who released or revoked it; empty for expiry and policy."),
)

CURRENT_ACCESS = (
    Column("grant_id", "pk", "Grant number."),
    Column("request_id", "request_id", "Number of the request that made the grant."),
    Column("user", "user__username", "Who holds it (username)."),
    Column("user_email", "user__email", "Their email address."),
    Column("target", "profile__target__name", "Target (catalog name)."),
    Column("profile", "profile__name", "Access profile (catalog name)."),
    Column("state", "state", "`active`, `past_expiry` (expired, removal under way) or `ending` (released or revoked, removal under way)."),
    Column("started_at", "starts_at", "When it was provisioned."),
    Column("expires_at", "expires_at", "When it expires."),
    Column("time_left_seconds", "remaining", "Seconds left at the time of the download (0 unless `active`)."),
    Column("break_glass", "break_glass", "`true` if granted through break-glass."),
    Column("external_ref", "external_ref", "The account on the target, e.g. `jit_g42`."),
    Column("end_reason", "end_reason", "Why it is ending, when `ending` or `past_expiry`."),
)

DECISIONS = (
    Column("request_id", "pk", "Request number."),
    Column("requested_at", "created_at", "When the request was made."),
    Column("requester", "requester__username", "Who asked (username)."),
    Column("target", "profile__target__name", "Target (catalog name)."),
    Column("profile", "profile__name", "Access profile (catalog name)."),
    Column("requested_duration_seconds", "duration", "How long was asked for, in seconds."),
    Column("decision", "decision", "`approved`, `auto_approved`, `break_glass`, `denied`, `lapsed` or `cancelled`."),
    Column("decided_by", "decided_by__username", "Who gave the last approval or denied; empty for rules, lapses and cancellations."),
    Column("auto_rule", "auto_rule", "The policy rule that approved it, if any."),
    Column("decided_at", "decided_at", "When it was decided (or lapsed, or was cancelled)."),
    Column("time_to_decision_seconds", "time_to_decision", "Seconds from `requested_at` to `decided_at`."),
    Column("comment", "decision_comment", "The decider's comment."),
    Column("ticket", "ticket", "Ticket reference, if given."),
    Column("extends_grant_id", "extends_id", "For a request for more time: the grant it extends."),
)

DECISIONS_BY_PROFILE = (
    Column("profile", "profile__name", "Access profile (catalog name)."),
    Column("profile_title", "profile__title", "Its title."),
    Column("target", "profile__target__name", "Target (catalog name)."),
    Column("decided", "decided", "Requests approved (by anyone or anything) or denied."),
    Column("approved", "approved", "Approved by a person."),
    Column("auto_approved", "auto_approved", "Approved by a policy rule."),
    Column("break_glass", "break_glass", "Break-glass uses."),
    Column("denied", "denied", "Denied."),
    Column("lapsed", "lapsed", "Lapsed: nobody decided in time."),
    Column("cancelled", "cancelled", "Cancelled by the requester or by policy."),
    Column("auto_share", "auto_share", "`auto_approved / decided`, 0 to 1, four decimals; empty when nothing was decided."),
    Column("avg_time_to_decision_seconds", "avg_time_to_decision", "Mean seconds to a person's decision."),
    Column("max_time_to_decision_seconds", "max_time_to_decision", "Longest seconds to a person's decision."),
)

DECISIONS_BY_APPROVER = (
    Column("approver", "decided_by__username", "The person who gave the last approval or denied (username)."),
    Column("decided", "decided", "Requests they decided."),
    Column("approved", "approved", "Of which approved."),
    Column("denied", "denied", "Of which denied."),
    Column("avg_time_to_decision_seconds", "avg_time_to_decision", "Mean seconds from request to their decision."),
    Column("max_time_to_decision_seconds", "max_time_to_decision", "Longest seconds from request to their decision."),
)

BREAK_GLASS = (
    Column("request_id", "pk", "Request number."),
    Column("grant_id", "grant__id", "Grant number."),
    Column("requested_at", "created_at", "When break-glass was used."),
    Column("user", "requester__username", "Who used it (username)."),
    Column("target", "profile__target__name", "Target (catalog name)."),
    Column("profile", "profile__name", "Access profile (catalog name)."),
    Column("requested_duration_seconds", "duration", "How long was asked for, in seconds."),
    Column("justification", "justification", "The emergency they gave."),
    Column("ticket", "ticket", "Ticket reference, if given."),
    Column("grant_status", "grant_status", "Status of the grant."),
    Column("started_at", "started_at", "When the access was provisioned."),
    Column("ended_at", "ended_at", "When it was confirmed gone."),
    Column("review_state", "review_state", "`open` or `closed`."),
    Column("reviewed_by", "review__closed_by__username", "Who closed the review."),
    Column("reviewed_at", "review__closed_at", "When."),
    Column("review_comment", "review__comment", "What the reviewer checked."),
)

DRIFT = (
    Column("finding_id", "pk", "Finding number."),
    Column("found_at", "found_at", "When the reconciler found it."),
    Column("target", "target__name", "Target (catalog name)."),
    Column("external_ref", "external_ref", "The account or object on the target."),
    Column("kind", "kind", "`orphan` (no grant explains it), `not_revoked` (should be gone) or `missing` (an active grant's access is gone)."),
    Column("grant_id", "grant_id", "The grant it belongs to, if any."),
    Column("user", "grant__user__username", "That grant's holder."),
    Column("profile", "grant__profile__name", "That grant's profile."),
    Column("action", "action", "What the reconciler did."),
    Column("resolved_at", "resolved_at", "When it was resolved, if it was."),
)

TIMELINE = (
    Column("at", "when", "When it happened."),
    Column("event", "what", "`requested`, `requested (break-glass)`, `asked for more time`, `request approved|auto-approved|denied|lapsed|cancelled`, "
                            "`access started`, `access ending` (release, revocation or expiry began), `access ended` (confirmed gone), "
                            "`approved a request`, `denied a request`, `revoked someone's access`, `closed a break-glass review`."),
    Column("request_id", "request_no", "The request concerned."),
    Column("grant_id", "grant_no", "The grant concerned, if any."),
    Column("target", "target_name", "Target (catalog name)."),
    Column("profile", "profile_name", "Access profile (title)."),
    Column("counterpart", "counterpart", "The other party: who decided (or the rule), who ended it, or whose request they decided."),
    Column("detail", "detail", "Justification, comment, end reason or account on the target."),
)

TIMELINE_EVENTS = (
    Column("event_id", "pk", "Audit event number."),
    Column("at", "created_at", "When it was recorded."),
    Column("action", "action", "What happened, e.g. `request.submitted`."),
    Column("object_type", "object_type", "Kind of object, e.g. `accessrequest`."),
    Column("object_id", "object_id", "Its number."),
    Column("details", "details", "The event's details as JSON."),
    Column("hash", "hash", "The event's hash in the chain."),
)


# Cells and the download ------------------------------------------------------

# A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value) -> str:
    """Return one CSV cell: times in ISO 8601 UTC, durations in whole seconds, text safe from formula injection."""
    if value is None:
        return ""
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, datetime.timedelta):
        return str(int(value.total_seconds()))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    text = str(value)
    if text.startswith(FORMULA_STARTS):
        text = "'" + text
    return text


# The cells the database makes, per vendor. Each template carries no `%` of its own: Django fills templates
# with `%` formatting, and the SQLite debug cursor (DEBUG, query capture) formats the finished SQL with its
# parameters again, so a literal `%Y` fails there ("unsupported format character"). Formats go as parameters.
CELL_VENDORS = ("postgresql", "sqlite")
_SQLITE_UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class UtcText(Func):
    """A time as ISO 8601 UTC text (`2026-11-29T03:04:05Z`), made by the database (a vendor of CELL_VENDORS)."""

    output_field = models.TextField()

    def as_sql(self, compiler, connection, **extra):
        raise NotSupportedError(f"UtcText has no SQL for {connection.vendor}; CSV cells are made in Python there.")

    def as_postgresql(self, compiler, connection, **extra):
        return super().as_sql(compiler, connection, template="""to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')""", **extra)

    def as_sqlite(self, compiler, connection, **extra):
        # Django keeps SQLite times as UTC text.
        sql, params = compiler.compile(self.source_expressions[0])
        return f"strftime(%s, {sql})", (_SQLITE_UTC_FORMAT, *params)


class WholeSeconds(Func):
    """A duration in whole seconds (truncated), made by the database (a vendor of CELL_VENDORS)."""

    output_field = models.BigIntegerField()

    def as_sql(self, compiler, connection, **extra):
        raise NotSupportedError(f"WholeSeconds has no SQL for {connection.vendor}; CSV cells are made in Python there.")

    def as_postgresql(self, compiler, connection, **extra):
        return super().as_sql(compiler, connection, template="trunc(extract(epoch from %(expressions)s))::bigint", **extra)

    def as_sqlite(self, compiler, connection, **extra):
        # Django keeps SQLite durations as integer microseconds; integer division truncates.
        return super().as_sql(compiler, connection, template="(%(expressions)s / 1000000)", **extra)


def _formula_safe(field, *, postgresql=False):
    """The text of `field` with a leading `'` where a spreadsheet would run it (as `cell` does), made by the database."""
    # On PostgreSQL ascii() of the first character, an integer compared with
    # integers, costs about nothing; left() and six text comparisons took
    # 0.4 s per million cells.
    starts = In(Func(F(field), function="ascii", output_field=models.IntegerField()), [ord(c) for c in FORMULA_STARTS]) if postgresql \
        else In(Left(F(field), 1), list(FORMULA_STARTS))
    return Case(
        When(starts, then=Concat(Value("'"), F(field), output_field=models.TextField())),
        default=F(field),
        output_field=models.TextField(),
    )


def _csv_values(rows, columns, *, copy=False):
    """Return `rows` as tuples of CSV-ready cells, and per column a converter to apply in Python (None: none needed).

    The database writes the cells (times, whole seconds, true/false, text
    made safe from formula injection; csv writes None as an empty cell), so
    that a million-row download hands rows straight to the csv module.
    Columns of other types (JSON, fractions), UNION querysets (the
    timeline) and databases outside CELL_VENDORS go through `cell` in Python.
    `copy`: cells for PostgreSQL's COPY (the same text): empty text becomes
    NULL, which COPY writes as csv writes '' (COPY writes '' as `""`).
    """
    if rows.query.combinator or connections[rows.db].vendor not in CELL_VENDORS:  # a UNION takes no more annotations
        return rows.values_list(*[c.field for c in columns]), [cell] * len(columns)
    probe = rows.query.chain()
    names, converters, cells = [], [], {}
    for i, column in enumerate(columns):
        try:
            output = probe.resolve_ref(column.field, allow_joins=True).output_field
        except Exception:  # noqa: BLE001 - an expression Django cannot type: the generic cell
            output = None
        expression = None
        if isinstance(output, models.DateTimeField):
            expression = UtcText(column.field)
        elif isinstance(output, models.DurationField):
            expression = WholeSeconds(column.field)
        elif isinstance(output, models.BooleanField):
            expression = Case(When(**{column.field: True}, then=Value("true")), When(**{column.field: False}, then=Value("false")),
                              output_field=models.TextField())
        elif isinstance(output, (models.CharField, models.TextField)):
            expression = _formula_safe(column.field, postgresql=copy)
            if copy:
                expression = NullIf(expression, Value(""), output_field=models.TextField())
        if expression is not None:
            name = f"_csv_{i}"
            cells[name] = expression
            names.append(name)
            converters.append(None)
        else:
            names.append(column.field)
            integer = isinstance(output, (models.AutoField, models.IntegerField, models.ForeignKey))
            converters.append(None if integer else cell)
    return rows.annotate(**cells).values_list(*names), converters


def csv_chunks(columns, rows, *, rows_per_chunk=1000):
    """Yield the header line, then the rows of `rows` (a queryset, or a list of dicts) as CSV, `rows_per_chunk` lines at a time.

    The header goes out before any row is read. Rows are read through a
    chunked iterator (a server-side cursor on PostgreSQL), so memory stays
    flat however many there are.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([c.header for c in columns])
    yield buffer.getvalue()
    if isinstance(rows, list):  # a summary already read (one row per profile or approver)
        for start in range(0, len(rows), rows_per_chunk):
            buffer.seek(0)
            buffer.truncate()
            writer.writerows([cell(row[c.field]) for c in columns] for row in rows[start:start + rows_per_chunk])
            yield buffer.getvalue()
        return
    postgresql = connections[rows.db].vendor == "postgresql"
    values, converters = _csv_values(rows, columns, copy=postgresql)
    if postgresql and not any(converters):
        yield from _copied_chunks(values, rows_per_chunk=rows_per_chunk)
    else:
        yield from _written_chunks(values, converters, writer, buffer, rows_per_chunk=rows_per_chunk)


def _copied_chunks(values, *, rows_per_chunk):
    """Yield the rows of `values` (cells made by `_csv_values`) as CSV bytes that PostgreSQL's COPY writes.

    COPY's CSV quotes exactly as the csv module does (a cell holding a
    comma, a quote, CR or LF; quotes doubled) but ends lines with LF: each
    row arrives as one message ending in its LF, which becomes csv's CRLF,
    so the bytes are those `_written_chunks` gives. One statement: one
    consistent snapshot, planned for every row, and no Python per cell.
    """
    try:
        sql, params = values.query.get_compiler(using=values.db).as_sql()
    except EmptyResultSet:  # a filter no row can match (e.g. `pk__in=[]`)
        return
    with transaction.atomic(using=values.db), connections[values.db].cursor() as cursor:
        _plan_for_every_row(cursor)
        with cursor.cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", tuple(params)) as copy:
            read, chunk = copy.read, []
            while row := read():
                chunk.append(row[:-1])
                if len(chunk) == rows_per_chunk:
                    chunk.append(b"")
                    yield b"\r\n".join(chunk)
                    chunk = []
            if chunk:
                chunk.append(b"")
                yield b"\r\n".join(chunk)


def _plan_for_every_row(cursor):
    # Every row will be read: plan for all of them (hash joins, one sort)
    # rather than for the first tenth (a nested loop per row). And without
    # JIT: compiling the cells' expressions took seconds in each parallel
    # worker (8.5 s of a 20 s export of a million grants) and saves less.
    cursor.execute("SET LOCAL cursor_tuple_fraction = 1.0")
    cursor.execute("SET LOCAL jit = off")


def _written_chunks(values, converters, writer, buffer, *, rows_per_chunk):
    """Yield the rows of `values` through the csv module, converting in Python the cells `converters` name."""
    # In a transaction, PostgreSQL streams the server-side cursor as it is
    # read; outside one (autocommit) Django declares it WITH HOLD, and the
    # whole result is built on the server before the first row comes back.
    # It also makes the file one consistent snapshot.
    with transaction.atomic(using=values.db):
        connection = connections[values.db]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                _plan_for_every_row(cursor)
        values = values.iterator(chunk_size=2000)
        if any(converters):
            convert = [c or _same for c in converters]
            values = ([f(v) for f, v in zip(convert, row)] for row in values)
        while True:
            chunk = list(itertools.islice(values, rows_per_chunk))
            if not chunk:
                return
            buffer.seek(0)
            buffer.truncate()
            writer.writerows(chunk)
            yield buffer.getvalue()


def _same(value):
    return value


def csv_response(request, *, report: str, columns, rows, filters: dict, scope: str) -> StreamingHttpResponse:
    """Record the download in the trail, then stream `rows` (a queryset, or a list of dicts) as CSV, 2,000 rows per database round trip."""
    audit.record("report.downloaded", actor=request.user, details={"report": report, "filters": filters, "scope": scope})
    chunks = _abort_on_failure(csv_chunks(columns, rows), report=report, request_id=getattr(request, "request_id", None))
    response = StreamingHttpResponse(chunks, content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="jitportal-{report.replace("_", "-")}-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response


def _abort_on_failure(chunks, *, report: str, request_id: str | None):
    """Yield `chunks`; when one fails, log it with the request id and raise again, so that the server aborts the response.

    The status line and the header row are out by then: breaking the transfer
    (gunicorn closes the connection without the chunked terminator) is the
    one way left to tell the client. Ending it cleanly would hand the auditor
    a shorter file that looks complete.
    """
    sent = 0
    try:
        for chunk in chunks:
            yield chunk
            sent += len(chunk)
    except Exception:
        logger.exception("CSV download %s failed after %d characters (request %s): the response is aborted", report, sent, request_id)
        raise
