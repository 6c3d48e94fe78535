"""Operations: health and readiness probes, Prometheus metrics, JSON logs, `check --deploy`."""

import base64
import datetime
import io
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import Schedule, Task
from django_q.tasks import async_task

import jitportal.logging
from grants import lifecycle, reconcile, tasks
from grants.connectors import get_connector
from grants.models import AccessProfile, Target
from jitportal import ops, queues
from jitportal.logging import JsonFormatter

BASE = Path(__file__).resolve().parents[1]
JUSTIFICATION = "Investigate INC-4711: slow order queries on appdb"


# Personas and a catalog, built through the lifecycle ----------------------


@pytest.fixture
def engineers(db):
    return Group.objects.create(name="engineers")


@pytest.fixture
def otto(django_user_model):
    """A db approver."""
    user = django_user_model.objects.create_user("otto", "otto@example.com", "otto-password-123")
    user.groups.add(Group.objects.create(name="db-approvers"))
    return user


@pytest.fixture
def make_engineer(django_user_model, engineers):
    def make(username):
        user = django_user_model.objects.create_user(username, f"{username}@example.com", f"{username}-password-123")
        user.groups.add(engineers)
        return user

    return make


def make_target(name, *, pg=None, secret_env="JIT_TEST_PG_DSN"):
    """A PostgreSQL target; `pg` is the test cluster, or None for one that is never called."""
    config = (
        {"host": pg.host, "port": pg.port, "dbname": "appdb"}
        if pg
        else {"host": "127.0.0.1", "port": 1, "dbname": "appdb"}
    )
    return Target.objects.create(name=name, kind="postgres", config=config, secret_env=secret_env)


def make_profile(target, name="appdb-readonly"):
    profile = AccessProfile.objects.create(
        name=name,
        title=name,
        target=target,
        scope={"roles": ["app_readonly"]},
        max_duration=datetime.timedelta(hours=4),
        approver_group=Group.objects.get(name="db-approvers"),
    )
    profile.requestable_by.add(Group.objects.get(name="engineers"))
    return profile


def submit(user, profile, *, duration=datetime.timedelta(minutes=30)):
    return lifecycle.submit_request(requester=user, profile=profile, duration=duration, justification=JUSTIFICATION)


def scrape(client, **headers):
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    return response.content.decode()


def sample(text, name, **labels):
    """Return the value of one sample in Prometheus text format (labels in any order), or None."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if match and match[1] == name and dict(re.findall(r'(\w+)="([^"]*)"', match[2] or "")) == labels:
            return float(match[3])
    return None


def sweep_finished(ago: datetime.timedelta):
    """Record a finished minute sweep, as a worker does (django-q2 keeps its Task row)."""
    stopped = timezone.now() - ago
    Task.objects.create(
        id=uuid.uuid4().hex, name="sweep", func=queues.SWEEP_FUNC, started=stopped, stopped=stopped, success=True
    )


# /healthz and /readyz ---------------------------------------------------------


def test_healthz_answers_ok_without_touching_the_database(client):
    # No `db` fixture: any query would fail this test.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.content == b"ok\n"
    assert "no-cache" in response["Cache-Control"]


def test_probes_answer_a_load_balancer_calling_by_address_over_http(client, db, settings):
    settings.ALLOWED_HOSTS = ["jit.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    sweep_finished(datetime.timedelta(seconds=20))
    assert client.get("/healthz", HTTP_HOST="10.0.0.5:8000").status_code == 200
    assert client.get("/readyz", HTTP_HOST="10.0.0.5:8000").status_code == 200
    assert client.get("/metrics", HTTP_HOST="10.0.0.5:8000").status_code == 200
    # Every other page keeps the host check and the HTTPS redirect.
    assert client.get("/access/", HTTP_HOST="10.0.0.5:8000").status_code == 400
    redirect = client.get("/access/", HTTP_HOST="jit.example.com")
    assert redirect.status_code == 301 and redirect["Location"] == "https://jit.example.com/access/"


def test_readyz_is_ready_when_database_broker_and_workers_are_fine(client, db):
    assert Schedule.objects.get(name="jitportal: sweep").func == queues.SWEEP_FUNC  # the signal readyz watches
    sweep_finished(datetime.timedelta(seconds=40))
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["failed"] == []
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] == "ok, 0 tasks queued"
    assert body["checks"]["workers"] == "ok, the minute sweep finished 40 s ago"


def test_readyz_names_the_workers_when_the_sweep_has_not_run_for_long(client, db):
    sweep_finished(datetime.timedelta(minutes=10))
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail" and body["failed"] == ["workers"]
    assert body["checks"]["database"] == "ok"
    assert "the minute sweep last finished 600 s ago" in body["checks"]["workers"]


def test_readyz_gives_a_starting_process_time_before_any_sweep_has_run(client, db, monkeypatch):
    monkeypatch.setattr(ops, "STARTED", time.monotonic() - 30)
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["workers"] == "starting: no sweep has run yet"

    monkeypatch.setattr(ops, "STARTED", time.monotonic() - 3600)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["workers"]
    assert "last finished never" in response.json()["checks"]["workers"]


def test_readyz_names_the_broker_and_keeps_its_address_out_of_the_answer(client, db, monkeypatch):
    class DeadRedis:
        def ping(self):
            raise ConnectionError("Error 111 connecting to 10.9.9.9:6379. Connection refused.")

    monkeypatch.setattr(queues, "_broker", DeadRedis())
    sweep_finished(datetime.timedelta(seconds=5))
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["broker"]
    assert body["checks"]["broker"] == "failed: ConnectionError"
    assert "10.9.9.9" not in response.content.decode()


@pytest.fixture
def qcluster(portal_database_url):
    """A real `qcluster` on the test database, as in production."""
    env = {**os.environ, "DATABASE_URL": portal_database_url, "Q_WORKERS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=BASE,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.django_db(transaction=True)
def test_readyz_sees_a_real_worker_run_the_minute_sweep(client, monkeypatch, qcluster):
    monkeypatch.setattr(ops, "STARTED", time.monotonic() - 3600)
    assert client.get("/readyz").status_code == 503
    # What the schedule does every minute, without waiting for django-q2's 30 s scheduler tick.
    async_task(queues.SWEEP_FUNC)
    deadline = time.monotonic() + 60
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.3)
    assert client.get("/readyz").json()["checks"]["workers"].startswith("ok, the minute sweep finished")


# /metrics -----------------------------------------------------------------------


def test_metrics_count_requests_by_state_and_decisions(client, db, make_engineer, otto):
    profile = make_profile(make_target("appdb-cluster"))
    submit(make_engineer("ana"), profile)
    submit(make_engineer("ben"), profile)
    approved = submit(make_engineer("cara"), profile)
    lifecycle.approve_request(approved.pk, actor=otto)  # provisioning waits for commit: the target is never called

    text = scrape(client)
    assert sample(text, "jitportal_requests", state="pending") == 2
    assert sample(text, "jitportal_requests", state="approved") == 1
    assert sample(text, "jitportal_requests", state="denied") == 0
    assert sample(text, "jitportal_decisions_total", outcome="approved") == 1
    assert sample(text, "jitportal_decisions_total", outcome="auto_approved") == 0
    assert sample(text, "jitportal_grants", state="scheduled") == 1
    assert sample(text, "jitportal_time_to_decision_seconds_bucket", le="10.0") == 1
    assert sample(text, "jitportal_time_to_decision_seconds_gcount") == 1
    assert 0 <= sample(text, "jitportal_time_to_decision_seconds_gsum") < 10
    assert sample(text, "jitportal_active_grants", target="appdb-cluster", kind="postgres") == 0
    assert sample(text, "jitportal_target_up", target="appdb-cluster", kind="postgres") == 0


def test_metrics_show_active_grants_per_target_and_the_expiry_lag(client, db, pg_target_env, make_engineer, otto):
    live_target, other = (
        make_target("appdb-cluster", pg=pg_target_env),
        make_target("other-cluster", secret_env="JIT_OPS_UNSET_DSN"),
    )
    profile = make_profile(live_target)
    make_profile(other, name="other-readonly")
    holder = submit(make_engineer("ana"), profile)
    lifecycle.approve_request(holder.pk, actor=otto)
    lifecycle.provision_grant(holder.grant.pk)
    short = submit(make_engineer("ben"), profile, duration=datetime.timedelta(seconds=1))
    lifecycle.approve_request(short.pk, actor=otto)
    grant = lifecycle.provision_grant(short.grant.pk)

    tasks.check_targets()

    text = scrape(client)
    assert sample(text, "jitportal_active_grants", target="appdb-cluster", kind="postgres") == 2
    assert sample(text, "jitportal_target_up", target="appdb-cluster", kind="postgres") == 1
    assert sample(text, "jitportal_target_up", target="other-cluster", kind="postgres") == 0
    assert sample(text, "jitportal_active_grants", target="other-cluster", kind="postgres") == 0
    assert sample(text, "jitportal_provisioning_latency_seconds_gcount") == 2

    time.sleep(max(0.0, (grant.expires_at - timezone.now()).total_seconds()) + 0.3)
    assert tasks.expire_due() == 1  # the real revocation on the target, read back
    grant.refresh_from_db()
    lag = (grant.verified_at - grant.expires_at).total_seconds()

    text = scrape(client)
    assert sample(text, "jitportal_active_grants", target="appdb-cluster", kind="postgres") == 1
    assert sample(text, "jitportal_grants", state="revoked") == 1
    assert sample(text, "jitportal_expiry_lag_seconds_gcount") == 1
    assert sample(text, "jitportal_expiry_lag_seconds_gsum") == pytest.approx(lag, abs=0.001)
    assert sample(text, "jitportal_expiry_lag_seconds_bucket", le="0.1") == (1 if lag <= 0.1 else 0)
    assert sample(text, "jitportal_expiry_lag_seconds_bucket", le="5.0") == 1
    assert sample(text, "jitportal_revocation_latency_seconds_gcount") == 1
    assert sample(text, "jitportal_revocation_failures_total") == 0


def test_metrics_count_failures_and_drift(client, db, make_engineer, otto, monkeypatch):
    monkeypatch.setenv("JIT_TEST_PG_DSN", "postgresql://jitadmin:x@127.0.0.1:1/postgres")  # nothing listens there
    profile = make_profile(make_target("appdb-cluster"))
    req = submit(make_engineer("ana"), profile)
    lifecycle.approve_request(req.pk, actor=otto)
    lifecycle.provision_grant(req.grant.pk)  # refused: a retry
    tasks.check_targets()

    text = scrape(client)
    assert sample(text, "jitportal_provisioning_failures_total", outcome="retry") == 1
    assert sample(text, "jitportal_provisioning_failures_total", outcome="failed") == 0
    assert sample(text, "jitportal_target_up", target="appdb-cluster", kind="postgres") == 0
    assert sample(text, "jitportal_grants", state="scheduled") == 1


def test_metrics_show_drift_the_reconciler_found(client, db, pg_target_env, make_engineer, otto):
    target = make_target("appdb-cluster", pg=pg_target_env)
    req = submit(make_engineer("ana"), make_profile(target))
    lifecycle.approve_request(req.pk, actor=otto)
    grant = lifecycle.provision_grant(req.grant.pk)
    with get_connector(target) as connector:
        connector.revoke(grant)  # behind the portal's back: the grant says active, the role is gone
    with psycopg.connect(pg_target_env.admin_dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE jit_g999999 LOGIN PASSWORD 'made-by-hand'")
    findings = reconcile.reconcile_target(target)
    assert {(f.external_ref, f.kind) for f in findings} >= {("jit_g999999", "orphan"), (grant.external_ref, "missing")}

    text = scrape(client)
    assert sample(text, "jitportal_drift_findings_total", kind="missing") == 1
    assert sample(text, "jitportal_drift_findings_total", kind="orphan") >= 1
    assert sample(text, "jitportal_drift_findings_open", target="appdb-cluster", kind="missing") == 1
    assert sample(text, "jitportal_drift_findings_open", target="appdb-cluster", kind="orphan") == 0  # removed


def test_a_scrape_costs_the_same_queries_however_much_there_is(client, db, make_engineer, otto):
    make_profile(make_target("appdb-cluster"))

    def queries():
        with CaptureQueriesContext(connection) as captured:
            scrape(client)
        return len(captured)

    few = queries()
    for i in range(3):
        profile = make_profile(make_target(f"cluster-{i}"), name=f"profile-{i}")
        for name in ("ana", "ben"):
            req = submit(make_engineer(f"{name}{i}"), profile)
            lifecycle.approve_request(req.pk, actor=otto)
    assert queries() == few <= 12


def test_metrics_require_the_token_when_one_is_set(client, db, settings):
    settings.METRICS_TOKEN = "m3trics-t0ken"
    missing = client.get("/metrics")
    assert missing.status_code == 401 and missing["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="m3trics-t0ken").status_code == 401
    assert "jitportal_requests" in scrape(client, HTTP_AUTHORIZATION="Bearer m3trics-t0ken")


def test_metrics_outside_demo_mode_need_a_token_even_when_none_is_set(client, db, settings, caplog):
    settings.DEMO_MODE, settings.METRICS_TOKEN, settings.METRICS_PUBLIC = False, "", False
    for host in ("jit.example.com", "10.0.0.7", "anything.example"):
        response = client.get("/metrics", HTTP_HOST=host)
        assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
        assert "jitportal_active_grants" not in response.content.decode()
    assert any("set METRICS_TOKEN" in r.getMessage() for r in caplog.records if r.name == "jitportal.ops")
    # A token, once set, is what it takes.
    settings.METRICS_TOKEN = "m3trics-t0ken"
    assert "jitportal_active_grants" in scrape(client, HTTP_AUTHORIZATION="Bearer m3trics-t0ken")


def test_metrics_are_public_outside_demo_mode_only_when_told(client, db, settings):
    settings.DEMO_MODE, settings.METRICS_TOKEN, settings.METRICS_PUBLIC = False, "", True
    assert "jitportal_requests" in scrape(client)
    # A token set wins over METRICS_PUBLIC.
    settings.METRICS_TOKEN = "m3trics-t0ken"
    assert client.get("/metrics").status_code == 401


def test_production_settings_refuse_metrics_without_a_token_by_default(tmp_path):
    code = (
        "from django.test import Client; from django.conf import settings as s;"
        "print(s.METRICS_PUBLIC, Client().get('/metrics', HTTP_HOST='jit.example.com').status_code)"
    )
    database = f"sqlite:///{tmp_path / 'empty.sqlite3'}"

    def run(**env):
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=BASE,
            env=production_env(DATABASE_URL=database, **env),
            capture_output=True,
            text=True,
        )
        return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr

    assert run() == "False 401"
    assert run(METRICS_PUBLIC="true") == "True 503"  # no token needed; this empty database has no tables: unavailable


def test_metrics_speak_openmetrics_to_a_prometheus_that_asks(client, db):
    response = client.get(
        "/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"
    )
    assert response["Content-Type"].startswith("application/openmetrics-text")
    text = response.content.decode()
    assert "# TYPE jitportal_expiry_lag_seconds gaugehistogram" in text
    assert text.endswith("# EOF\n")


# Request ids and JSON logs ------------------------------------------------------------


@pytest.fixture
def json_log():
    """Log lines as production writes them: the root logger through the JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)


def test_log_lines_carry_the_request_id_the_response_shows(client, db, json_log):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    request_id = response["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    [line] = [entry for entry in json_log() if entry["logger"] == "django.request"]
    assert line["request_id"] == request_id
    assert line["level"] == "WARNING"
    assert line["message"] == "Not Found: /no-such-page"
    assert datetime.datetime.fromisoformat(line["time"]).tzinfo is not None
    # Once the response is finished, the thread's next log lines belong to no request.
    assert jitportal.logging.request_id.get() is None


def test_a_proxys_request_id_is_kept_and_a_mangled_one_replaced(client, db, json_log):
    given = client.get("/no-such-page", HTTP_X_REQUEST_ID="4f1c2b9e-proxy-42")
    assert given["X-Request-ID"] == "4f1c2b9e-proxy-42"
    mangled = client.get("/no-such-page", HTTP_X_REQUEST_ID='x" injected\nline')
    assert re.fullmatch(r"[0-9a-f]{32}", mangled["X-Request-ID"])
    too_long = client.get("/no-such-page", HTTP_X_REQUEST_ID="a" * 129)
    assert re.fullmatch(r"[0-9a-f]{32}", too_long["X-Request-ID"])
    ids = [entry["request_id"] for entry in json_log() if entry["logger"] == "django.request"]
    assert ids == ["4f1c2b9e-proxy-42", mangled["X-Request-ID"], too_long["X-Request-ID"]]


def test_json_log_lines_outside_a_request_carry_no_id_and_keep_the_traceback():
    formatter = JsonFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("grants.tasks").makeRecord(
            "grants.tasks", logging.ERROR, __file__, 1, "Revoking grant %s failed", (7,), sys.exc_info()
        )
    line = json.loads(formatter.format(record))
    assert line["message"] == "Revoking grant 7 failed"
    assert line["request_id"] is None
    assert line["exception"].startswith("Traceback") and "ValueError: boom" in line["exception"]
    assert "\n" not in formatter.format(record)


# Production settings --------------------------------------------------------------


def production_env(**extra):
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SECRET_KEY", "OIDC_", "SECURE_", "SESSION_", "LOG_", "METRICS_", "JITPORTAL_"))
        and k not in ("DEBUG", "ALLOWED_HOSTS", "DATABASE_URL", "BEHIND_HTTPS_PROXY", "Q_REDIS_URL")
    }
    return {
        **keep,
        "DEBUG": "false",
        "OIDC_ISSUER": "https://idp.example.com/",
        "OIDC_CLIENT_ID": "portal",
        "SECRET_KEY": secrets.token_urlsafe(40)[:50],
        "ALLOWED_HOSTS": "jit.example.com",
        # Any 32 bytes are an Ed25519 private key: the exported audit heads are signed.
        "AUDIT_SIGNING_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        **extra,
    }


def test_check_deploy_finds_nothing_to_warn_about_in_production_settings():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE,
        env=production_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_logs_are_json_and_https_settings_follow_the_environment():
    code = (
        "import logging; from django.conf import settings as s;"
        "print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
        "s.SECURE_PROXY_SSL_HEADER);"
        "logging.getLogger('grants.tasks').warning('hello %s', 'ops');"
        "from django_q.conf import logger; logger.info('from the workers')"
    )
    run = lambda **env: subprocess.run(  # noqa: E731 (a one-line helper, called once per environment below)
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=BASE,
        env=production_env(**env),
        capture_output=True,
        text=True,
    )
    result = run(BEHIND_HTTPS_PROXY="true")
    assert result.stdout.strip().splitlines()[-1] == "True 31536000 True ('HTTP_X_FORWARDED_PROTO', 'https')", (
        result.stderr
    )
    ours, workers = [json.loads(line) for line in result.stderr.strip().splitlines()[-2:]]
    assert ours["logger"] == "grants.tasks" and ours["message"] == "hello ops" and ours["request_id"] is None
    assert workers["logger"] == "django-q" and workers["message"] == "from the workers"

    result = run(LOG_FORMAT="text", SESSION_COOKIE_SECURE="false")
    assert result.stdout.strip().splitlines()[-1] == "False 0 False None", result.stderr
    assert result.stderr.strip().splitlines()[-2] == "hello ops"

    result = run(LOG_FORMAT="xml")
    assert result.returncode != 0 and "LOG_FORMAT must be json or text" in result.stderr
