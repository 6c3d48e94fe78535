"""The cells of a CSV download and the streamed, audited response.

The columns are `reports.columns`; who may download what is `reports.scope`.
"""

from __future__ import annotations

import csv
import datetime
import io
import itertools
import json
import logging

import psycopg
from django.core.exceptions import EmptyResultSet
from django.db import NotSupportedError, connections, models, transaction
from django.db.models import Case, F, Func, Value, When
from django.db.models.functions import Concat, Left, NullIf
from django.db.models.lookups import In, LessThanOrEqual
from django.http import StreamingHttpResponse
from django.utils import timezone
from psycopg import pq

import audit

logger = logging.getLogger(__name__)


# A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value) -> str:
    """Return one CSV cell: times in ISO 8601 UTC, durations in whole seconds, text safe from formula injection."""
    if value is None:
        return ""
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
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
        return super().as_sql(
            compiler,
            connection,
            # to_char of a timestamptz writes it in the session's zone, which
            # `_plan_for_every_row` sets to UTC for the export's transaction:
            # `AT TIME ZONE 'UTC'` per cell cost 0.25 s per million (1.25 s
            # for the five times of an access-history row).
            template="""to_char(%(expressions)s, 'YYYY-MM-DD"T"HH24:MI:SS"Z"')""",
            **extra,
        )

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
        return super().as_sql(
            compiler, connection, template="trunc(extract(epoch from %(expressions)s))::bigint", **extra
        )

    def as_sqlite(self, compiler, connection, **extra):
        # Django keeps SQLite durations as integer microseconds; integer division truncates.
        return super().as_sql(compiler, connection, template="(%(expressions)s / 1000000)", **extra)


def _formula_safe(field, *, postgresql=False):
    """The text of `field` with a leading `'` where a spreadsheet
    would run it (as `cell` does), made by the database."""
    # On PostgreSQL ascii() of the first character, an integer compared with
    # integers, costs about nothing; left() and six text comparisons took
    # 0.4 s per million cells. Every formula start is at most 64 (`@`) and a
    # letter is above: one comparison settles nearly every cell, where the
    # IN list alone makes six.
    if postgresql:
        first = Func(F(field), function="ascii", output_field=models.IntegerField())
        codes = [ord(c) for c in FORMULA_STARTS]
        starts = LessThanOrEqual(first, max(codes)) & In(first, codes)
    else:
        starts = In(Left(F(field), 1), list(FORMULA_STARTS))
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
        except Exception:  # noqa: BLE001 (an expression Django cannot type: the generic cell)
            output = None
        expression = None
        if isinstance(output, models.DateTimeField):
            expression = UtcText(column.field)
        elif isinstance(output, models.DurationField):
            expression = WholeSeconds(column.field)
        elif isinstance(output, models.BooleanField):
            expression = Case(
                When(**{column.field: True}, then=Value("true")),
                When(**{column.field: False}, then=Value("false")),
                output_field=models.TextField(),
            )
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
    """Yield the header line, then the rows of `rows` (a queryset,
    or a list of dicts) as CSV, `rows_per_chunk` lines at a time.

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
            writer.writerows([cell(row[c.field]) for c in columns] for row in rows[start : start + rows_per_chunk])
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
        chunk = []
        for row in _copy_out(cursor.cursor, f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", tuple(params)):
            chunk.append(row[:-1])
            if len(chunk) == rows_per_chunk:
                chunk.append(b"")
                yield b"\r\n".join(chunk)
                chunk = []
        if chunk:
            chunk.append(b"")
            yield b"\r\n".join(chunk)


def _copy_out(cursor, statement: str, params: tuple):
    """Yield the rows of `COPY ... TO STDOUT` as they arrive, each with its LF.

    psycopg's `Copy.read()` costs a generator and a wait per row, which was
    most of the exporting process's CPU. A row libpq has already received
    is taken straight from it (`get_copy_data` without waiting); only when
    none is there does `read()` wait for the socket, psycopg's way. When
    libpq says the copy is over (-1), its final result is read here and the
    Copy told it is finished, as its own read would have done.
    """
    with cursor.copy(statement, params) as copy:
        pgconn, read = cursor.connection.pgconn, copy.read
        while True:
            size, row = pgconn.get_copy_data(1)
            if size > 0:
                yield row
            elif size == 0:  # nothing received yet: wait for it
                if not (row := read()):
                    return
                yield row
            else:
                while (result := pgconn.get_result()) is not None:
                    if result.status != pq.ExecStatus.COMMAND_OK:
                        raise psycopg.errors.error_from_result(result, encoding=pgconn._encoding)
                copy._finished = True
                return


def _plan_for_every_row(cursor):
    # Every row will be read: plan for all of them (hash joins, one sort)
    # rather than for the first tenth (a nested loop per row). And without
    # JIT: compiling the cells' expressions took seconds in each parallel
    # worker (8.5 s of a 20 s export of a million grants) and saves less.
    # UtcText's to_char writes times in the session's zone: UTC, whatever
    # the connection was set to.
    cursor.execute("SET LOCAL cursor_tuple_fraction = 1.0")
    cursor.execute("SET LOCAL jit = off")
    cursor.execute("SET LOCAL TimeZone = 'UTC'")


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
    """Record the download in the trail, then stream `rows` (a queryset,
    or a list of dicts) as CSV, 2,000 rows per database round trip."""
    audit.record(
        "report.downloaded", actor=request.user, details={"report": report, "filters": filters, "scope": scope}
    )
    chunks = _abort_on_failure(
        csv_chunks(columns, rows), report=report, request_id=getattr(request, "request_id", None)
    )
    response = StreamingHttpResponse(chunks, content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="jitportal-{report.replace("_", "-")}-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response


def _abort_on_failure(chunks, *, report: str, request_id: str | None):
    """Yield `chunks`; when one fails, log it with the request
    id and raise again, so that the server aborts the response.

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
        logger.exception(
            "CSV download %s failed after %d characters (request %s): the response is aborted", report, sent, request_id
        )
        raise
