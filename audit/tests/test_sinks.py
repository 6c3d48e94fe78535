"""Audit streaming: every event, in order and at least once, to a real rsyslogd, an HTTP server and moto's S3.

The servers are real processes or threads on loopback: rsyslogd from its own
configuration (the file it writes is read back), a ThreadingHTTPServer for
the webhook, moto's server for S3. A worker killed halfway is a real
process killed with SIGKILL.
"""

import datetime
import hashlib
import hmac
import io
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.urls import reverse

import audit
import audit.sinks
from audit.log import canonical, head_line, verify_copy
from audit.models import SinkCursor
from audit.sinks import configured_sinks, deliver, deliver_all, sink_status
from audit.sinks.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER
from devtools.pgcluster import free_port
from grants.tests.connectors.moto_support import MotoServer

RSYSLOGD = "/usr/sbin/rsyslogd"
SECRET = "s3cret-for-the-test"
BOM = "\ufeff"


def _events(n, start=0):
    return [audit.record("test.streamed", details={"n": start + i, "text": 'héllo "quoted" ] \n'}) for i in range(n)]


def _wait_for_port(port, *, process=None, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Rsyslogd:
    """One rsyslogd of our own: a TCP input on a loopback port, every message's raw text to one file."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.out = folder / "received.log"
        self.conf = folder / "rsyslog.conf"
        self.conf.write_text(
            f'global(workDirectory="{folder}")\n'
            'module(load="imtcp")\n'
            'template(name="raw" type="string" string="%rawmsg%\\n")\n'
            'ruleset(name="jitportal") {\n'
            f'  action(type="omfile" file="{self.out}" template="raw" flushOnTXEnd="on" asyncWriting="off")\n'
            "}\n"
            f'input(type="imtcp" address="127.0.0.1" port="{self.port}" ruleset="jitportal")\n',
            encoding="utf-8",
        )
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.folder / "rsyslogd.pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, process=self.process)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def messages(self, count, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            lines = self.out.read_text(encoding="utf-8").splitlines() if self.out.exists() else []
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)


@pytest.fixture
def rsyslog(tmp_path):
    if not os.access(RSYSLOGD, os.X_OK):
        pytest.fail("rsyslogd is missing: `make system-deps` installs Debian's rsyslog")
    server = Rsyslogd(tmp_path)
    server.start()
    yield server
    server.stop()


class Webhook:
    """A real HTTP server on loopback that keeps what it was sent and answers with `status` (a list: one per call)."""

    def __init__(self):
        self.received = []
        self.statuses = []
        self.hold = None  # an Event: when set, requests wait for it before answering
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                webhook.received.append((dict(self.headers), body))
                if webhook.hold is not None:
                    webhook.hold.wait(30)
                status = webhook.statuses.pop(0) if webhook.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/audit"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def records(self):
        return [r for _, body in self.received for r in json.loads(body)["events"]]

    def close(self):
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    server = Webhook()
    yield server
    server.close()


@pytest.fixture(scope="module")
def moto():
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fast_retries(settings):
    # Backoff of at most 0 seconds: each delivery in a test may try again at once.
    settings.AUDIT_SINK_RETRY_MAX = 0


def _syslog_sink(settings, port, **more):
    settings.AUDIT_SINKS = [{"name": "siem", "kind": "syslog", "host": "127.0.0.1", "port": port, **more}]
    return configured_sinks()[0]


def _copy_from_syslog(lines):
    """Return the JSON Lines copy inside rsyslog's file: each message's MSG part, after the BOM."""
    return [line.split(BOM, 1)[1] for line in lines]


# Syslog


def test_every_event_reaches_rsyslog_in_order_as_rfc5424_with_its_hashes(db, settings, rsyslog, tmp_path, monkeypatch):
    events = _events(7)
    sink = _syslog_sink(settings, rsyslog.port, hostname="portal-1")
    sink.batch_size = 3

    assert deliver(sink) == 7

    lines = rsyslog.messages(7)
    assert len(lines) == 7
    first = lines[0]
    assert first.startswith("<86>1 ")  # facility authpriv (10), severity informational
    assert " portal-1 jitportal - test.streamed [jitportal@32473 " in first
    assert f'id="{events[0].pk}" hash="{events[0].hash}" prev_hash="{events[0].prev_hash}"' in first
    copy = _copy_from_syslog(lines)
    assert [json.loads(line)["id"] for line in copy] == [e.pk for e in events]
    assert SinkCursor.objects.get(name="siem").last_event_id == events[-1].pk
    # What rsyslog wrote verifies on its own.
    path = tmp_path / "copy.jsonl"
    path.write_text("\n".join(copy) + "\n", encoding="utf-8")
    out = io.StringIO()
    call_command("audit", "verify", "--from", str(path), stdout=out)
    assert "Copy intact: 7 events" in out.getvalue()
    # The README's recipe: the MSG after each BOM, through standard input.
    extracted = subprocess.run(
        ["sed", "-n", r"s/^.*\xef\xbb\xbf//p", str(rsyslog.out)], capture_output=True, check=True, text=True
    ).stdout
    monkeypatch.setattr(sys, "stdin", io.StringIO(extracted))
    out = io.StringIO()
    call_command("audit", "verify", "--from", "-", stdout=out)
    assert "Copy intact: 7 events" in out.getvalue() and "from the chain's first event" in out.getvalue()


def test_a_syslog_server_that_is_down_gets_every_event_when_it_returns(db, settings, rsyslog, fast_retries):
    sink = _syslog_sink(settings, rsyslog.port)
    _events(2)
    deliver(sink)
    rsyslog.stop()
    missed = _events(3, start=2)

    assert deliver(sink) == 0
    cursor = SinkCursor.objects.get(name="siem")
    assert cursor.failures == 1 and "cannot connect" in cursor.last_error
    assert cursor.last_event_id < missed[0].pk

    rsyslog.start()
    assert deliver(sink) == 3
    lines = rsyslog.messages(5)
    assert [json.loads(line)["details"]["n"] for line in _copy_from_syslog(lines)] == [0, 1, 2, 3, 4]
    cursor.refresh_from_db()
    assert (cursor.failures, cursor.last_error, cursor.last_event_id) == (0, "", missed[-1].pk)


class TLSSyslogServer:
    """A real TLS syslog receiver on loopback (RFC 5425): reads octet-counted frames until close_notify, answers it.

    rsyslog speaks TLS only with its GnuTLS or OpenSSL driver, packaged apart (rsyslog-gnutls); the framing and the
    close are the same, and this server checks both.
    """

    def __init__(self, folder: Path):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        self.ca_file = folder / "syslog-cert.pem"
        self.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file = folder / "syslog-key.pem"
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(self.ca_file, key_file)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.messages = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(raw, server_side=True) as conn:
                    data = b""
                    while chunk := conn.recv(65536):
                        data += chunk
                    conn.unwrap()
            except (OSError, ssl.SSLError):
                continue  # a client that refused our certificate
            while data:
                length, rest = data.split(b" ", 1)
                self.messages.append(rest[: int(length)].decode())
                data = rest[int(length) :]

    def close(self):
        self.listener.close()


def test_syslog_over_tls_checks_the_server_certificate_and_frames_every_event(db, settings, tmp_path, fast_retries):
    server = TLSSyslogServer(tmp_path)
    try:
        events = _events(3)
        sink = _syslog_sink(settings, server.port, tls=True, server_name="localhost")
        assert deliver(sink) == 0  # the system's CAs do not know this certificate
        assert "certificate verify failed" in SinkCursor.objects.get(name="siem").last_error

        sink = _syslog_sink(settings, server.port, tls=True, server_name="localhost", ca_file=str(server.ca_file))
        assert deliver(sink) == 3
        assert [json.loads(m.split(BOM, 1)[1])["hash"] for m in server.messages] == [e.hash for e in events]
    finally:
        server.close()


def test_octet_counting_frames_carry_newlines_and_non_ascii_whole(db, settings):
    sink = _syslog_sink(settings, 1)
    record = {
        "id": 1,
        "created_at": "2026-12-01T10:00:00.000001+00:00",
        "action": "a.b",
        "hash": "h",
        "prev_hash": "p",
        "details": {"x": "é\n"},
    }
    frame = sink.frames([record])
    length, message = frame.split(b" ", 1)
    assert int(length) == len(message)  # the length counts bytes, not characters
    assert b"\n" not in message


@pytest.mark.django_db(transaction=True)
def test_two_workers_never_send_the_same_batch_at_once(settings, webhook):
    events = _events(3)
    settings.AUDIT_SINKS = [{"name": "hook", "kind": "webhook", "url": webhook.url, "secret": SECRET}]
    webhook.hold = threading.Event()
    results = {}

    def worker(name):
        try:
            results[name] = deliver_all()
        finally:
            connection.close()

    first = threading.Thread(target=worker, args=("first",))
    first.start()
    deadline = time.monotonic() + 10
    while not webhook.received and time.monotonic() < deadline:
        time.sleep(0.02)
    second = threading.Thread(target=worker, args=("second",))
    second.start()
    second.join(10)
    # The first holds the cursor's row (its lock; its lease on SQLite): the second skips the sink.
    assert results["second"] == {"hook": 0}
    webhook.hold.set()
    first.join(10)
    assert results["first"] == {"hook": 3}
    assert len(webhook.received) == 1 and [r["id"] for r in webhook.records()] == [e.pk for e in events]


# Webhook


def test_the_webhook_gets_signed_batches_in_order(db, settings, webhook):
    events = _events(5)
    settings.AUDIT_SINKS = [{"name": "hook", "kind": "webhook", "url": webhook.url, "secret": SECRET, "batch_size": 2}]

    assert deliver_all() == {"hook": 5}

    assert len(webhook.received) == 3
    assert [r["hash"] for r in webhook.records()] == [e.hash for e in events]
    for headers, body in webhook.received:
        timestamp = headers[TIMESTAMP_HEADER]
        assert abs(int(timestamp) - time.time()) < 60
        # The receiver's check, as the README gives it.
        expected = "v1=" + hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
    # The bodies as received, one a line, verify on their own.
    assert verify_copy(body.decode() for _, body in webhook.received).count == 5


def test_a_webhook_error_is_retried_with_backoff_and_nothing_is_skipped(db, settings, webhook):
    events = _events(3)
    settings.AUDIT_SINKS = [{"name": "hook", "kind": "webhook", "url": webhook.url, "secret": SECRET, "tries": 2}]
    webhook.statuses = [503, 503, 500]

    assert deliver_all() == {"hook": 0}
    cursor = SinkCursor.objects.get(name="hook")
    assert cursor.failures == 1 and "answered 503" in cursor.last_error and cursor.retry_at is not None
    assert len(webhook.received) == 2  # tried twice within the delivery
    # Backing off: the next run leaves it alone until retry_at.
    assert deliver_all() == {"hook": 0} and len(webhook.received) == 2

    SinkCursor.objects.filter(name="hook").update(retry_at=None)
    assert deliver_all() == {"hook": 3}  # a 500, then a 200
    assert [r["id"] for _, body in webhook.received[-1:] for r in json.loads(body)["events"]] == [e.pk for e in events]
    cursor.refresh_from_db()
    assert (cursor.failures, cursor.last_event_id) == (0, events[-1].pk)


def test_a_webhook_that_is_down_catches_up_when_it_returns(db, settings, fast_retries):
    port = free_port()
    settings.AUDIT_SINKS = [
        {
            "name": "hook",
            "kind": "webhook",
            "url": f"http://127.0.0.1:{port}/a",
            "secret": SECRET,
            "tries": 1,
            "timeout": 2,
        }
    ]
    events = _events(4)
    assert deliver_all() == {"hook": 0}
    assert "ConnectionError" in SinkCursor.objects.get(name="hook").last_error

    server = Webhook()
    try:
        settings.AUDIT_SINKS = [{**settings.AUDIT_SINKS[0], "url": server.url}]
        assert deliver_all() == {"hook": 4}
        assert [r["id"] for r in server.records()] == [e.pk for e in events]
    finally:
        server.close()


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_delivery_leaves_the_cursor_and_the_batch_goes_again(
    settings, webhook, portal_database_url
):
    events = _events(3)
    config = [{"name": "hook", "kind": "webhook", "url": webhook.url, "secret": SECRET, "tries": 1, "timeout": 30}]
    webhook.hold = threading.Event()
    # Q_TIMEOUT: on SQLite the killed worker's lease on the sink lasts as long as a task may (a few seconds here).
    env = {**os.environ, "DATABASE_URL": portal_database_url, "AUDIT_SINKS": json.dumps(config), "Q_TIMEOUT": "3"}
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-c", "from audit.sinks import deliver_all; deliver_all()"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not webhook.received and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.05)
        assert webhook.received, worker.stderr.read().decode() if worker.poll() is not None else "no request"
        os.kill(worker.pid, signal.SIGKILL)  # the sink has the batch, the worker never hears back
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.stderr.close()
    webhook.hold.set()
    webhook.hold = None
    assert SinkCursor.objects.get(name="hook").last_event_id == 0

    settings.AUDIT_SINKS = config
    deadline = time.monotonic() + 30
    # PostgreSQL ends the killed worker's transaction (and its row lock) once it sees the connection gone; on SQLite
    # its lease runs out.
    while deliver_all() != {"hook": 3} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [r["id"] for r in webhook.records()] == [e.pk for e in events] * 2  # at least once: twice here
    assert SinkCursor.objects.get(name="hook").last_event_id == events[-1].pk


# S3


def test_s3_gets_json_lines_objects_named_in_order(db, settings, moto, fast_retries, tmp_path):
    moto.reset()
    s3 = boto3.client(
        "s3",
        endpoint_url=moto.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    settings.AUDIT_SINKS = [
        {
            "name": "bucket",
            "kind": "s3",
            "bucket": "trail",
            "endpoint_url": moto.url,
            "region": "us-east-1",
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "batch_size": 2,
            "prefix": "audit/",
        }
    ]
    events = _events(3)
    assert deliver_all() == {"bucket": 0}  # no bucket yet
    assert "NoSuchBucket" in SinkCursor.objects.get(name="bucket").last_error

    s3.create_bucket(Bucket="trail")
    assert deliver_all() == {"bucket": 3}
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="trail", Prefix="audit/")["Contents"]]
    assert keys == [
        f"audit/{events[0].pk:012d}-{events[1].pk:012d}.jsonl",
        f"audit/{events[2].pk:012d}-{events[2].pk:012d}.jsonl",
    ]
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(b"".join(s3.get_object(Bucket="trail", Key=k)["Body"].read() for k in keys * 2))
    out = io.StringIO()
    call_command("audit", "verify", "--from", str(copy), stdout=out)
    assert "Copy intact: 3 events" in out.getvalue() and "3 records delivered more than once" in out.getvalue()


# Each sink has its own cursor; configuration; metrics


def test_each_sink_has_its_own_cursor_and_lag(db, settings, webhook, fast_retries):
    settings.AUDIT_SINKS = [
        {"name": "up", "kind": "webhook", "url": webhook.url, "secret": SECRET},
        {"name": "down", "kind": "webhook", "url": f"http://127.0.0.1:{free_port()}/", "secret": SECRET, "tries": 1},
    ]
    _events(4)
    assert deliver_all() == {"up": 4, "down": 0}
    status = {s["name"]: s for s in sink_status()}
    assert (status["up"]["lag"], status["down"]["lag"]) == (0, 4)

    from jitportal.metrics import registry  # noqa: PLC0415 - the metrics module imports grants; keep it to this test

    samples = {(s.name, s.labels.get("sink")): s for m in registry.collect() for s in m.samples}
    assert samples[("jitportal_audit_sink_lag_events", "down")].value == 4
    assert samples[("jitportal_audit_sink_lag_events", "up")].value == 0
    assert samples[("jitportal_audit_sink_failures", "down")].value == 1
    assert "ConnectionError" in samples[("jitportal_audit_sink_last_error_info", "down")].labels["error"]


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"kind": "syslog", "host": "x"}, "needs a name and a kind"),
        ({"name": "a", "kind": "ftp"}, "needs a name and a kind"),
        ({"name": "a", "kind": "syslog"}, "host is required"),
        ({"name": "a", "kind": "webhook", "url": "https://x"}, "needs secret or secret_file"),
        ({"name": "a", "kind": "s3", "bucket": "b", "colour": "red"}, "unknown option(s) colour"),
    ],
)
def test_a_bad_sink_configuration_is_refused_with_what_to_fix(settings, entry, message):
    settings.AUDIT_SINKS = [entry]
    with pytest.raises(ImproperlyConfigured, match=message.replace("(", r"\(").replace(")", r"\)")):
        configured_sinks()


def test_a_bad_audit_sinks_variable_stops_the_portal_at_start(tmp_path):
    env = {**os.environ, "AUDIT_SINKS": '[{"name": "a", "kind": "syslog"}]', "DATABASE_URL": "sqlite:///:memory:"}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "AUDIT_SINKS a: host is required for kind syslog" in result.stderr


# verify --from


def test_verify_from_finds_a_changed_or_missing_record(db, settings, webhook, tmp_path):
    _events(4)
    settings.AUDIT_SINKS = [{"name": "hook", "kind": "webhook", "url": webhook.url, "secret": SECRET}]
    deliver_all()
    records = webhook.records()
    copy = tmp_path / "copy.jsonl"

    changed = [dict(r) for r in records]
    changed[2]["details"] = {**changed[2]["details"], "n": 99}
    copy.write_text("".join(json.dumps(r) + "\n" for r in changed), encoding="utf-8")
    with pytest.raises(CommandError, match=f"line 3: event #{records[2]['id']}: its content does not match its hash"):
        call_command("audit", "verify", "--from", str(copy))

    copy.write_text("".join(json.dumps(r) + "\n" for r in records[:1] + records[2:]), encoding="utf-8")
    with pytest.raises(CommandError, match="its prev_hash does not match"):
        call_command("audit", "verify", "--from", str(copy))

    # A copy that starts later says so, and still verifies.
    copy.write_text("".join(json.dumps(r) + "\n" for r in records[1:]), encoding="utf-8")
    out = io.StringIO()
    call_command("audit", "verify", "--from", str(copy), stdout=out)
    assert f"starting after hash {records[0]['hash']}" in out.getvalue()


def test_rsyslogd_is_installed_by_make_system_deps():
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text(encoding="utf-8")
    assert "install -y -qq rsyslog" in makefile
    assert shutil.which("rsyslogd") or os.access(RSYSLOGD, os.X_OK)


def test_an_append_queues_a_delivery_after_commit_at_most_one_every_few_seconds(
    db, settings, webhook, django_capture_on_commit_callbacks
):
    from django_q.models import OrmQ  # noqa: PLC0415 - only this test reads the queue

    settings.AUDIT_SINKS = [{"name": "hook", "kind": "webhook", "url": webhook.url, "secret": SECRET}]
    settings.AUDIT_SINK_NUDGE = 60
    audit.sinks._last_nudge[0] = float("-inf")
    before = OrmQ.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        _events(2)
    with django_capture_on_commit_callbacks(execute=True):
        _events(1)
    queued = [q.task for q in OrmQ.objects.order_by("id")[before:]]
    assert [t["func"] for t in queued] == ["audit.sinks.deliver_all"]
    assert OrmQ.objects.order_by("-id").first().key.endswith(":later")  # behind access work


def test_the_targets_page_shows_each_sink_its_lag_and_last_error(client, db, settings, admin_user, fast_retries):
    settings.AUDIT_SINKS = [
        {"name": "siem-down", "kind": "syslog", "host": "127.0.0.1", "port": free_port(), "timeout": 2},
    ]
    _events(3)
    deliver_all()
    client.force_login(admin_user)
    page = client.get(reverse("grants:targets")).content.decode()
    assert "Audit sinks" in page and "siem-down" in page
    lag = sink_status()[0]["lag"]
    assert (
        lag >= 3 and f"{lag} events" in page and "1 failure in a row" in page and "cannot connect to 127.0.0.1" in page
    )

    settings.AUDIT_SINKS = []
    assert "Audit sinks" not in client.get(reverse("grants:targets")).content.decode()


def test_verify_from_with_heads_finds_a_copy_rehashed_from_some_event_on(db, settings, webhook, tmp_path):
    _events(4)
    heads = tmp_path / "heads.txt"
    heads.write_text(head_line() + "\n", encoding="utf-8")
    settings.AUDIT_SINKS = [{"name": "hook", "kind": "webhook", "url": webhook.url, "secret": SECRET}]
    deliver_all()
    records = webhook.records()
    copy = tmp_path / "copy.jsonl"
    copy.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = io.StringIO()
    call_command("audit", "verify", "--from", str(copy), "--heads", str(heads), stdout=out)
    assert "It meets the 1 head of" in out.getvalue()

    # Someone changes an event of the copy and re-hashes every one after it: the copy alone still verifies.
    forged, prev = [], records[0]["prev_hash"]
    for i, r in enumerate(records):
        r = {**r, "prev_hash": prev, "details": {**r["details"], "n": 99} if i == 2 else r["details"]}
        r["hash"] = hashlib.sha256(
            canonical(
                created_at=datetime.datetime.fromisoformat(r["created_at"]),
                **{k: r[k] for k in ("actor_id", "action", "object_type", "object_id", "details", "prev_hash")},
            )
        ).hexdigest()
        forged.append(r)
        prev = r["hash"]
    copy.write_text("".join(json.dumps(r) + "\n" for r in forged), encoding="utf-8")
    call_command("audit", "verify", "--from", str(copy), stdout=io.StringIO())
    with pytest.raises(CommandError, match=f"the copy's event #{records[-1]['id']} has hash {forged[-1]['hash']}"):
        call_command("audit", "verify", "--from", str(copy), "--heads", str(heads))

    # A cut tail: the head names an event the copy should hold but does not.
    copy.write_text("".join(json.dumps(r) + "\n" for r in records[:2] + records[3:]), encoding="utf-8")
    with pytest.raises(CommandError, match="its prev_hash does not match"):
        call_command("audit", "verify", "--from", str(copy), "--heads", str(heads))
