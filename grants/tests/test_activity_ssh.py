"""Sessions an SSH host's guard reports to the portal: signed per host, recorded on the grant, audited.

The endpoint's rules against the Django test client; then the real thing:
the suite's kind of sshd (connectors/sshd_support.py) running the guard,
which reports to the live portal (pytest-django's live_server).
"""

import datetime
import hashlib
import hmac
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command

from audit.models import AuditEvent
from grants import lifecycle
from grants.connectors import get_connector
from grants.connectors.ssh import ca as sshca
from grants.models import AccessProfile, Target

from .conftest import JUSTIFICATION
from .connectors import sshd_support

H = datetime.timedelta(hours=1)
GUARD_SECRET = "guard-secret-of-the-hosts-target"
# Not test_ssh.py's account: with --dist loadfile both files may run at once, and each removes what it created.
USER = "jitsshact"


@pytest.fixture(scope="module")
def workdir():
    # Not pytest's tmp_path (0700): the guard runs as USER and reads the KRL and its secret.
    base = Path(tempfile.mkdtemp(prefix="jitportal-sshact-"))
    base.chmod(0o755)
    (base / "ca").mkdir(mode=0o700)
    (base / "krl").mkdir()
    (base / "krl").chmod(0o755)
    sshca.generate_ca(base / "ca" / "ca_key")
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def hosts(db, workdir, monkeypatch, groups):
    """An SSH target taking session reports, and a profile on it."""
    monkeypatch.setenv("JIT_TEST_SSHACT_CA", str(workdir / "ca" / "ca_key"))
    monkeypatch.setenv("JIT_TEST_GUARD_SECRET", GUARD_SECRET)
    target = Target.objects.create(
        name="hosts",
        kind="ssh",
        config={
            "krl_path": str(workdir / "krl" / "jit.krl"),
            "host": "127.0.0.1",
            "guard_secret_env": "JIT_TEST_GUARD_SECRET",
        },
        secret_env="JIT_TEST_SSHACT_CA",
    )
    profile = AccessProfile.objects.create(
        name="ssh-ops", title="SSH as ops", target=target, scope={"principals": ["ops"]}, max_duration=4 * H,
        approver_group=groups["db-approvers"],
    )  # fmt: skip
    profile.requestable_by.add(groups["engineers"])
    return profile


def _grant(profile, ana, otto, public_key=None):
    params = {"public_key": public_key} if public_key else {}
    req = lifecycle.submit_request(
        requester=ana, profile=profile, duration=H, justification=JUSTIFICATION, params=params
    )
    lifecycle.approve_request(req.pk, actor=otto)
    return lifecycle.provision_grant(req.grant.pk)


def _secret(target, host="web-1"):
    with get_connector(target) as connector:
        return connector.guard_host_secret(host)


def _post(client, target, report, *, host="web-1", secret=None, at=None):
    body = json.dumps(report).encode()
    timestamp = str(int(time.time() if at is None else at))
    secret = secret or _secret(target, host)
    signature = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return client.post(
        f"/access/ssh/{target.name}/sessions",
        data=body,
        content_type="application/json",
        headers={"X-Jit-Host": host, "X-Jit-Timestamp": timestamp, "X-Jit-Signature": signature},
    )


def _report(grant, **changes):
    report = {
        "session_id": "6f1c2d3e-aaaa-bbbb-cccc-000000000001",
        "serial": grant.pk,
        "key_id": f"jitportal-grant-{grant.pk}",
        "started_at": int(time.time()) - 60,
        "source": "192.0.2.7 51234",
    }
    return {**report, **changes}


def _reported(grant):
    return AuditEvent.objects.filter(action="grant.session_reported", object_id=str(grant.pk)).count()


def test_a_signed_start_and_end_make_one_session_on_the_grant_each_audited(client, hosts, ana, otto):
    grant = _grant(hosts, ana, otto)
    start = _report(grant)

    assert _post(client, hosts.target, start).status_code == 200
    assert _post(client, hosts.target, {**start, "ended_at": int(time.time()), "exit_status": 0}).status_code == 200

    grant.refresh_from_db()
    [session] = grant.activity["sessions"]
    assert session["host"] == "web-1" and session["source"] == "192.0.2.7 51234"
    assert session["exit_status"] == 0 and session["ended_at"] and session["started_at"]
    assert grant.activity["summary"] == "1 session"
    assert _reported(grant) == 2


def test_the_same_report_twice_is_recorded_once(client, hosts, ana, otto):
    grant = _grant(hosts, ana, otto)
    report = _report(grant)

    assert [_post(client, hosts.target, report).status_code for _ in range(2)] == [200, 200]

    assert _reported(grant) == 1


@pytest.mark.parametrize(
    "forgery, status, message",
    [
        ("wrong secret", 403, "The signature does not match this host's secret."),
        ("another host's secret", 403, "The signature does not match this host's secret."),
        ("ten minutes old", 403, "check the host's clock"),
    ],
)
def test_a_report_not_signed_by_that_host_just_now_is_refused(client, hosts, ana, otto, forgery, status, message):
    grant = _grant(hosts, ana, otto)
    kwargs = {
        "wrong secret": {"secret": "0" * 64},
        "another host's secret": {"secret": _secret(hosts.target, "web-2")},
        "ten minutes old": {"at": time.time() - 600},
    }[forgery]

    response = _post(client, hosts.target, _report(grant), **kwargs)

    assert response.status_code == status and message in response.json()["error"]
    grant.refresh_from_db()
    assert grant.activity == {} and _reported(grant) == 0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"key_id": "jitportal-grant-0"}, "is not the key id of serial"),
        ({"serial": "1"}, "serial must be"),
        ({"session_id": "x"}, "session_id must be"),
        ({"started_at": "yesterday"}, "started_at must be a Unix time"),
        ({"exit_status": 300}, "exit_status must be 0 to 255"),
        ({"recording_sha256": "not-a-hash"}, "recording_sha256 must be"),
    ],
)
def test_a_malformed_report_gets_a_clear_message(client, hosts, ana, otto, change, message):
    grant = _grant(hosts, ana, otto)
    response = _post(client, hosts.target, _report(grant, **change))
    assert response.status_code == 400 and message in response.json()["error"]


def test_a_report_for_no_grant_of_that_target_is_not_found(client, hosts, ana, otto):
    grant = _grant(hosts, ana, otto)
    other = Target.objects.create(
        name="other-hosts", kind="ssh", config=hosts.target.config, secret_env="JIT_TEST_SSHACT_CA"
    )
    response = _post(client, other, _report(grant), secret=_secret(other))
    assert response.status_code == 404
    unknown = grant.pk + 1000
    response = _post(client, hosts.target, _report(grant, serial=unknown, key_id=f"jitportal-grant-{unknown}"))
    assert response.status_code == 404


def test_a_target_without_a_guard_secret_takes_no_reports_and_says_so_plainly(client, hosts, ana, otto, monkeypatch):
    grant = _grant(hosts, ana, otto)
    secret = _secret(hosts.target)
    monkeypatch.delenv("JIT_TEST_GUARD_SECRET")

    response = _post(client, hosts.target, _report(grant), secret=secret)

    assert response.status_code == 503 and response.json() == {"error": "This target takes no session reports."}


def test_the_endpoint_takes_posts_only_and_no_bad_host_name(client, hosts, ana, otto):
    grant = _grant(hosts, ana, otto)
    assert client.get("/access/ssh/hosts/sessions").status_code == 405
    response = _post(client, hosts.target, _report(grant), host="bad host", secret="0" * 64)
    assert response.status_code == 400 and "host name" in response.json()["error"]


def test_the_grant_page_lists_the_reported_sessions(client, hosts, ana, otto):
    grant = _grant(hosts, ana, otto)
    digest = "ab" * 32
    _post(client, hosts.target, _report(grant, ended_at=int(time.time()), exit_status=3, recording_sha256=digest))
    client.force_login(ana)

    page = client.get(f"/access/grants/{grant.pk}/").content.decode()

    assert "Sessions reported by the host" in page and f"<code>{digest}</code>" in page
    assert "<td>192.0.2.7 51234</td><td>3</td>" in page


def test_the_secret_command_prints_the_hosts_secret(hosts, capsys):
    call_command("ssh_guard_secret", "hosts", "web-1")
    assert capsys.readouterr().out.strip() == _secret(hosts.target)


# -- the guard on a real host --------------------------------------------------------


@pytest.fixture
def host(hosts, workdir, live_server):
    """An sshd whose guard reports to the live portal as host web-1."""
    if os.geteuid() != 0 or not sshd_support.available():
        pytest.fail("These tests need root and OpenSSH's server: apt-get install -y openssh-server.")
    created = sshd_support.ensure_user(USER)
    target = hosts.target
    with get_connector(target) as connector:
        connector.publish_krl()
        ca_public = connector.ca_public_key()
        krl = connector.krl_path
    base = Path(tempfile.mkdtemp(prefix="sshd-", dir=workdir))
    base.chmod(0o755)
    secret_file = base / "report.secret"
    secret_file.write_text(_secret(target) + "\n")
    secret_file.chmod(0o644)  # the guard runs as the logged-in user (the README says what that means)
    recordings = base / "recordings"
    recordings.mkdir()
    recordings.chmod(0o1777)  # the guard writes them as the logged-in user
    server = sshd_support.SSHServer(
        base / "sshd",
        ca_public_key=ca_public,
        krl=krl,
        principals={USER: ["ops"]},
        user=USER,
        guard_args=f"--report-url {live_server.url}/access/ssh/{target.name}/sessions"
        f" --report-secret-file {secret_file} --report-host web-1 --record-dir {recordings}",
    )
    server.recordings = recordings
    (base / "sshd").mkdir()
    (base / "sshd").chmod(0o755)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if created:
            sshd_support.remove_user(USER)


def test_the_guard_reports_each_session_with_its_source_and_exit_status(host, hosts, ana, otto, tmp_path):
    grant = _grant(hosts, ana, otto)
    creds = lifecycle.reveal_credentials(grant.pk, actor=ana)
    key, cert = tmp_path / "id", tmp_path / "id-cert.pub"
    key.write_text(creds["private_key"])
    key.chmod(0o600)
    cert.write_text(creds["certificate"] + "\n")

    first = host.run(key, cert, "echo hello")
    second = host.run(key, cert, "echo oops >&2; exit 7")

    assert (first.returncode, first.stdout.strip()) == (0, "hello"), first.stderr + host.log_text()[-2000:]
    assert second.returncode == 7 and second.stderr.strip() == "oops"  # through the recorder, as it came
    grant.refresh_from_db()
    sessions = grant.activity["sessions"]
    assert [s["exit_status"] for s in sessions] == [0, 7]
    assert all(s["source"].startswith("127.0.0.1 ") and s["host"] == "web-1" for s in sessions)
    assert len({s["session_id"] for s in sessions}) == 2
    assert _reported(grant) == 4  # a start and an end each
    assert uuid.UUID(sessions[0]["session_id"])
    # The host keeps each recording; the portal has its hash.
    recording = host.recordings / (sessions[0]["session_id"] + ".rec")
    assert hashlib.sha256(recording.read_bytes()).hexdigest() == sessions[0]["recording_sha256"]
    assert recording.read_bytes().endswith(b" 1 6\nhello\n\n")
