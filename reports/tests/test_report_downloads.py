"""The report pages' CSV downloads: headers, rows, formula-safe cells, COPY, and a download that fails midway."""

import csv
import datetime
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from http.client import HTTPConnection, IncompleteRead
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from django.db.models import TextField, Value
from django.db.models.query import QuerySet
from django.http import StreamingHttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from devtools.pgcluster import free_port
from grants import lifecycle, selectors
from grants.models import AccessRequest
from reports import columns, downloads

from .conftest import ask, held
from .support import (
    ACCESS,
    BREAK_GLASS,
    CURRENT,
    DECISIONS,
    ISO_UTC,
    as_dicts,
    download,
    text,
    timeline,
)

# CSV -------------------------------------------------------------------------------

DOWNLOADS = [
    (ACCESS, "access_history", columns.ACCESS_HISTORY),
    (CURRENT, "current_access", columns.CURRENT_ACCESS),
    (DECISIONS, "decisions", columns.DECISIONS),
    (DECISIONS, "decisions_by_profile", columns.DECISIONS_BY_PROFILE),
    (DECISIONS, "decisions_by_approver", columns.DECISIONS_BY_APPROVER),
    (BREAK_GLASS, "break_glass", columns.BREAK_GLASS),
    (BREAK_GLASS, "drift", columns.DRIFT),
    ("/audit/users/ana/", "timeline", columns.TIMELINE),
    ("/audit/users/ana/", "timeline_events", columns.TIMELINE_EVENTS),
]


@pytest.mark.parametrize("url, table, columns", DOWNLOADS)
def test_every_report_downloads_as_a_streamed_csv_with_its_documented_headers(
    client, history, audra, url, table, columns
):
    client.force_login(audra)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, {"format": "csv", "table": table})
        assert isinstance(response, StreamingHttpResponse)
        assert response["Content-Type"] == "text/csv; charset=utf-8"
        assert re.fullmatch(
            rf'attachment; filename="jitportal-{table.replace("_", "-")}-\d{{8}}T\d{{6}}Z\.csv"',
            response["Content-Disposition"],
        )
        # Recorded before a single row is read.
        event = AuditEvent.objects.get(action="report.downloaded")
        assert event.details["report"] == table and event.actor == audra
        lines = iter(response.streaming_content)
        before = len(queries)
        header = next(lines)
        assert len(queries) == before  # the header goes out before the rows are read
    assert header.decode().rstrip("\r\n").split(",") == [c.header for c in columns]
    assert len({c.header for c in columns}) == len(columns)
    rows = list(csv.reader(io.StringIO(b"".join(lines).decode())))
    assert all(len(r) == len(columns) for r in rows)


@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
@pytest.mark.parametrize("url, table, columns", DOWNLOADS)
def test_every_download_holds_the_rows_its_page_counts_with_debug_on_and_off(
    client, history, audra, settings, url, table, columns, debug
):
    # Regression: on SQLite with DEBUG (make run's demo) the debug cursor formats the finished SQL with `%` again,
    # and a `%Y` in a strftime template failed the stream after its header: a 200 with the header line only.
    settings.DEBUG = debug
    client.force_login(audra)
    page = client.get(url)
    section = next(s for s in page.context["sections"] if s.name == table)
    rows = download(client, url, table=table)
    assert rows[0] == [c.header for c in columns]
    assert len(rows) - 1 == section.table.paginator.count


def test_downloads_read_rows_through_a_chunked_iterator_or_a_copy(client, history, audra, monkeypatch):
    seen = []
    iterator = QuerySet.iterator

    def spy(self, chunk_size=None):
        seen.append(chunk_size)
        return iterator(self, chunk_size=chunk_size)

    monkeypatch.setattr(QuerySet, "iterator", spy)
    client.force_login(audra)
    download(client, ACCESS)
    if connection.vendor == "postgresql":
        assert seen == []  # one COPY, streamed row by row
        download(client, timeline("ana"), table="timeline_events")  # JSON details: cells made in Python
    assert seen == [2000]


def _both_paths(rows, columns):
    """Return the CSV bytes of `rows` as the csv module writes them (cells as before COPY) and as COPY writes them."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    values, converters = downloads._csv_values(rows, columns)
    written = "".join(downloads._written_chunks(values, converters, writer, buffer, rows_per_chunk=2)).encode()
    values, converters = downloads._csv_values(rows, columns, copy=True)
    assert not any(converters)
    return written, b"".join(downloads._copied_chunks(values, rows_per_chunk=2))


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="COPY is PostgreSQL's; SQLite writes every CSV through the csv module"
)
def test_copy_writes_the_same_bytes_as_the_csv_module(client, history, django_user_model, groups, profile, otto, audra):
    odd = django_user_model.objects.create_user("@mallory", "=cmd@example.com", "mallory-password-123")
    odd.groups.add(groups["engineers"])
    for justification, ticket in [
        ('Line one, with a comma\r\nline two "quoted" and \\. a backslash', ""),
        ('=HYPERLINK("http://evil.example","click")', "+1"),
        ("-2+3 Zürich ✓ and a bare\nLF in the middle", "@SUM(1)"),
        ("A justification that ends with spaces   ", "a,b"),
    ]:
        req = ask(odd, profile, justification=justification, ticket=ticket)
        lifecycle.deny_request(req.pk, actor=otto, comment='="quoted", said otto')
    held(odd, profile, otto, justification='A quote " inside, and one at the end"', ticket="\\.")
    queries = [
        (selectors.access_history_columns(selectors.access_history_base()), columns.ACCESS_HISTORY),
        (selectors.current_access(), columns.CURRENT_ACCESS),
        (selectors.decisions(), columns.DECISIONS),
        (selectors.break_glass_uses(), columns.BREAK_GLASS),
        (selectors.drift_report(), columns.DRIFT),
        (selectors.decisions().filter(pk__in=[]), columns.DECISIONS),  # nothing to read
    ]
    for rows, report_columns in queries:
        written, copied = _both_paths(rows, report_columns)
        assert copied == written
    written, _ = _both_paths(selectors.decisions(), columns.DECISIONS)
    assert (
        written.count(b"\r\n") > 10 and b"'@mallory" in written and b'"\'=""quoted""' in written
    )  # the data has what it should
    # Every start a spreadsheet runs, as the database neutralises
    # it for COPY and for the csv module, is what `cell` gives.
    for value in [*downloads.FORMULA_STARTS, "=1+2", "\tx", "plain", "", "é=x", "'quoted", "0=1", " =x", "A=1"]:
        text = Value(value, output_field=TextField())
        made = (
            AccessRequest.objects.annotate(v=text)
            .values_list(downloads._formula_safe("v", postgresql=True), downloads._formula_safe("v"))[:1]
            .get()
        )
        assert made == (downloads.cell(value),) * 2, value
    client.force_login(audra)
    body = b"".join(client.get(ACCESS, {"format": "csv"}).streaming_content)
    header = ",".join(c.header for c in columns.ACCESS_HISTORY).encode() + b"\r\n"
    assert (
        body
        == header
        + _both_paths(selectors.access_history_columns(selectors.access_history_base()), columns.ACCESS_HISTORY)[0]
    )


@pytest.mark.postgres_only("reads PostgreSQL's COPY protocol")
def test_the_copy_reader_hands_over_every_row_and_a_failure_and_leaves_the_connection_usable(db):
    # Many rows, so that most are taken from what libpq already received and some wait for the socket;
    # quoted cells with LF and CRLF inside stay as COPY wrote them.
    statement = (
        "COPY (SELECT g, E'a\\nb,' || g, repeat('x', 300) FROM generate_series(1, 20000) g) TO STDOUT (FORMAT csv)"
    )
    with connection.cursor() as cursor:
        rows = [bytes(row) for row in downloads._copy_out(cursor.cursor, statement, ())]
        assert len(rows) == 20000
        assert rows[0] == b'1,"a\nb,1",' + b"x" * 300 + b"\n"
        assert rows[-1].startswith(b'20000,"a\nb,20000",')
        # The copy is over for psycopg too: the same cursor runs the next statement.
        cursor.execute("SELECT 42")
        assert cursor.fetchone() == (42,)
        failing = "COPY (SELECT 1 / (10000 - g) FROM generate_series(1, 20000) g) TO STDOUT (FORMAT csv)"
        got = []
        with pytest.raises(psycopg.errors.DivisionByZero):
            for row in downloads._copy_out(cursor.cursor, failing, ()):
                got.append(row)
        assert 0 < len(got) < 10000  # what came before the error, and nothing after it


@pytest.mark.parametrize("url, table, columns", DOWNLOADS)
def test_the_readme_documents_every_csv_column(url, table, columns):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## For auditors", 1)[1]
    assert f"`{table}`" in section
    for column in columns:
        assert f"`{column.header}`" in section, column.header


@pytest.mark.parametrize("value", ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx", '=HYPERLINK("http://evil")'])
def test_cells_that_a_spreadsheet_would_run_are_neutralised(value):
    assert downloads.cell(value) == "'" + value


@pytest.mark.parametrize(
    "value, expected",
    [
        ("plain", "plain"),
        ("a=b", "a=b"),
        ("", ""),
        (None, ""),
        (True, "true"),
        (7, "7"),
        (datetime.timedelta(minutes=90, microseconds=5), "5400"),
        (
            datetime.datetime(2026, 11, 29, 4, 4, 5, 123456, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
            "2026-11-29T03:04:05Z",
        ),
        ({"b": 1, "a": "=x"}, '{"a":"=x","b":1}'),
    ],
)
def test_cells_are_plain_text_iso_times_and_whole_seconds(value, expected):
    assert downloads.cell(value) == expected


def test_formula_injection_through_the_portal_is_neutralised_in_downloads(client, ana, otto, profile, audra):
    req = ask(
        ana, profile, justification='=HYPERLINK("http://evil.example/"&A1, "click for details")', ticket="@SUM(1+1)"
    )
    lifecycle.deny_request(req.pk, actor=otto, comment="-2+3 is not a reason")
    client.force_login(audra)
    [row] = as_dicts(download(client, DECISIONS))
    assert row["comment"] == "'-2+3 is not a reason"
    assert row["ticket"] == "'@SUM(1+1)"
    [row] = as_dicts(download(client, timeline("ana")))[:1]
    assert row["detail"].startswith("'=HYPERLINK(")


def test_csv_times_are_utc_whatever_the_portal_time_zone(client, history, audra, settings):
    settings.TIME_ZONE = "America/New_York"
    client.force_login(audra)
    rows = as_dicts(download(client, ACCESS))
    done = history["done"]
    row = next(r for r in rows if r["grant_id"] == str(done.pk))
    assert row["started_at"] == done.starts_at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for r in rows:
        for name in ("requested_at", "decided_at", "started_at", "expires_at", "ended_at"):
            assert r[name] == "" or ISO_UTC.match(r[name]), (name, r[name])


@pytest.mark.postgres_only("to_char writes the PostgreSQL session's time zone; SQLite keeps UTC text")
def test_csv_times_are_utc_whatever_the_database_session_time_zone(client, history, audra):
    # PostgreSQL makes the time cells with to_char, which writes the session's zone; the export sets UTC itself.
    client.force_login(audra)
    expected = as_dicts(download(client, ACCESS))
    with connection.cursor() as cursor:
        cursor.execute("SET TimeZone = 'Asia/Kathmandu'")  # +05:45: no whole-hour slip can pass
    try:
        assert as_dicts(download(client, ACCESS)) == expected
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET TimeZone = 'UTC'")
    done = next(r for r in expected if r["grant_id"] == str(history["done"].pk))
    assert done["started_at"] == history["done"].starts_at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_download_link_carries_the_filters(client, history, audra):
    client.force_login(audra)
    page = text(client.get(ACCESS, {"user": "bob", "outcome": "active", "sort": "user", "page": "1"}))
    assert 'href="?user=bob&amp;outcome=active&amp;format=csv"' in page
    page = text(client.get(BREAK_GLASS, {"target": "appdb-cluster"}))
    assert 'href="?target=appdb-cluster&amp;format=csv&amp;table=drift"' in page


# A download that fails midway ------------------------------------------------


@pytest.mark.postgres_only("holds a PostgreSQL table lock and ends the portal's database session mid-stream")
def test_a_download_that_fails_after_its_first_byte_is_aborted_and_logged_with_the_request_id(
    transactional_db, audra, settings, portal_database_url, tmp_path
):
    # The portal under gunicorn (as `make run` and production serve it); the fault is real: the portal's database
    # session ends while the stream waits for its rows. The client must see a broken transfer, not a clean end.

    web = Client()
    web.force_login(audra)
    url = portal_database_url
    port = free_port()
    log = (tmp_path / "web.log").open("w+")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "JITPORTAL_DEMO": "true",
        "SECRET_KEY": settings.SECRET_KEY,
        "LOG_FORMAT": "json",
        "DEBUG": "0",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "jitportal.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--timeout",
            "60",
            "--no-control-socket",
        ],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(300):  # up to 30 s for gunicorn to import the portal
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None, log.seek(0) or log.read()
            time.sleep(0.1)
        with psycopg.connect(url, autocommit=True) as admin, psycopg.connect(url) as locker:
            # The rows' table is locked before the request: the view answers, the header row goes out, then the
            # stream's query waits for the lock, and that waiting session is ended.
            locker.execute("LOCK TABLE grants_grant IN ACCESS EXCLUSIVE MODE")
            http = HTTPConnection("127.0.0.1", port, timeout=30)
            http.request(
                "GET",
                ACCESS + "?format=csv",
                headers={"Cookie": f"sessionid={web.cookies['sessionid'].value}", "X-Request-ID": "abort-test-42"},
            )
            response = http.getresponse()
            assert response.status == 200 and response.getheader("X-Request-ID") == "abort-test-42"
            assert response.getheader("Transfer-Encoding") == "chunked"
            assert response.readline().decode().startswith("grant_id,request_id,")
            for _ in range(300):
                waiting = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchall()
                if waiting:
                    break
                time.sleep(0.1)
            assert len(waiting) == 1
            admin.execute("SELECT pg_terminate_backend(%s)", waiting[0])
            locker.rollback()
            with pytest.raises(IncompleteRead):
                response.read()
            http.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    log.seek(0)
    lines = [json.loads(line) for line in log if line.startswith("{")]
    failed = [entry for entry in lines if "CSV download access_history failed" in entry["message"]]
    assert len(failed) == 1, lines
    assert failed[0]["request_id"] == "abort-test-42" and "abort-test-42" in failed[0]["message"]
    assert "terminating connection" in failed[0]["exception"]
