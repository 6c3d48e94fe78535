"""The real workers end a short grant on their own: qcluster and the expiry timer as separate processes."""

import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from django.utils import timezone

from grants import lifecycle
from grants.models import Grant

from .conftest import JUSTIFICATION

BASE = Path(__file__).resolve().parents[2]


def wait_for(predicate, *, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"gave up waiting {seconds} s for {what}")


@pytest.fixture
def workers(pg_target_env, portal_database_url, tmp_path):
    """Start `qcluster` and `expiry_timer` against the test database, as in production."""
    env = {
        **os.environ,
        "DATABASE_URL": portal_database_url,
        "Q_WORKERS": "2",
        "JIT_TEST_PG_DSN": pg_target_env.admin_dsn,
    }
    logs = []
    procs = []
    for args in (["qcluster"], ["expiry_timer", "--max-sleep", "1"]):
        log = open(tmp_path / f"{args[0]}.log", "w+")  # noqa: SIM115 (the child process writes it while it runs; closed when it has stopped)
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [sys.executable, "manage.py", *args], cwd=BASE, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        )
    yield
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    for log in logs:
        log.close()


@pytest.mark.django_db(transaction=True)
def test_workers_provision_at_approval_and_revoke_at_expiry(workers, ana, otto, profile):
    req = lifecycle.submit_request(
        requester=ana, profile=profile, duration=datetime.timedelta(seconds=6), justification=JUSTIFICATION
    )
    lifecycle.approve_request(req.pk, actor=otto)
    grant = req.grant

    # Provisioned in the background, right after the approval committed.
    wait_for(lambda: Grant.objects.get(pk=grant.pk).status == Grant.Status.ACTIVE, seconds=60, what="provisioning")
    creds = lifecycle.reveal_credentials(grant.pk, actor=ana)
    session = psycopg.connect(creds["dsn"], autocommit=True)
    assert session.execute("SELECT count(*) FROM orders").fetchone()[0] > 0

    # Nobody touches it: the timer and the workers end it at expiry.
    grant = wait_for(
        lambda: Grant.objects.filter(pk=grant.pk, status=Grant.Status.REVOKED).first(),
        seconds=60,
        what="revocation at expiry",
    )
    assert grant.end_reason == "expired"
    assert grant.revoked_at >= grant.expires_at
    assert grant.verified_at >= grant.revoked_at
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(creds["dsn"])


@pytest.mark.django_db(transaction=True)
def test_workers_open_a_scheduled_window_at_its_start_and_close_it_at_its_end(workers, ana, otto, profile):
    start = timezone.now() + datetime.timedelta(seconds=5)
    req = lifecycle.submit_request(
        requester=ana,
        profile=profile,
        duration=datetime.timedelta(seconds=5),
        justification=JUSTIFICATION,
        starts_at=start,
    )
    lifecycle.approve_request(req.pk, actor=otto)
    grant = wait_for(
        lambda: Grant.objects.filter(request=req, status=Grant.Status.ACTIVE).first(),
        seconds=60,
        what="the window to open",
    )
    assert grant.starts_at >= start
    assert grant.expires_at == start + datetime.timedelta(seconds=5)
    grant = wait_for(
        lambda: Grant.objects.filter(pk=grant.pk, status=Grant.Status.REVOKED).first(),
        seconds=60,
        what="the window to close",
    )
    assert grant.end_reason == "expired"
