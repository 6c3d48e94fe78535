"""The `jit` command line, run as a real process against a real running portal (pytest-django's live_server)."""

import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest

from accounts import tokens
from grants import lifecycle
from grants.models import AccessRequest, Grant

# The personas and the catalog of the grants tests, on the real target cluster.
from grants.tests.conftest import JUSTIFICATION, ana, groups, marc, otto, profile, target  # noqa: F401 (pytest fixtures, used by name)

CLI_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(CLI_DIR))

from jit import ConfigError, read_config  # noqa: E402 (after sys.path.insert: the CLI's package lives in cli/)
from jit.__main__ import env_lines, parse_duration  # noqa: E402 (after sys.path.insert: the CLI's package lives in cli/)


def jit_env(url, token, home):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JIT_") and k != "XDG_CONFIG_HOME"}
    env.update({"PYTHONPATH": str(CLI_DIR), "HOME": str(home)})
    if url:
        env["JIT_URL"] = url
    if token:
        env["JIT_TOKEN"] = token
    return env


def command(*args):
    return [sys.executable, "-m", "jit", *args]


@pytest.fixture
def portal(live_server, tmp_path):
    """Run `jit` as a person holding a token, against the live portal."""

    def run(user, *args, token=None, timeout=60):
        secret = token or (tokens.create_token(actor=user, name="cli test", days=1)[1] if user else "")
        return subprocess.run(
            command(*args),
            env=jit_env(live_server.url, secret, tmp_path),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(user, *args):
        secret = tokens.create_token(actor=user, name="cli test", days=1)[1]
        return subprocess.Popen(
            command(*args),
            env=jit_env(live_server.url, secret, tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    run.start = start
    return run


def wait_for(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def read_until(stream, text, timeout=20) -> str:
    """Return the lines of `stream` up to the first holding `text` (fail after `timeout` seconds)."""
    lines = []

    def read():
        for line in stream:
            lines.append(line)
            if text in line:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert any(text in line for line in lines), f"no {text!r} within {timeout} s in: {''.join(lines)!r}"
    return "".join(lines)


def test_request_approve_status_and_release_through_the_cli(portal, ana, otto, profile):  # noqa: F811 (pytest: the parameter is the imported fixture)
    result = portal(ana, "profiles")
    assert result.returncode == 0, result.stderr
    assert "appdb-readonly" in result.stdout
    header, row = (re.split(r"\s{2,}", line) for line in result.stdout.splitlines())
    assert header == ["NAME", "TARGET", "DEFAULT", "MAX", "APPROVED BY", "TITLE"]
    assert row == ["appdb-readonly", "appdb-cluster", "1h", "4h", "a member of db-approvers", "appdb read-only"]

    result = portal(
        ana, "request", "appdb-readonly", "--for", "30m", "--why", JUSTIFICATION, "--ticket", "INC-4711", "--no-wait"
    )
    assert result.returncode == 0, result.stderr
    req = AccessRequest.objects.get(requester=ana)
    assert (req.duration.total_seconds(), req.ticket, req.status) == (1800, "INC-4711", "pending")
    assert (
        result.stdout.splitlines()[0]
        == f"Request #{req.pk} pending, waiting for step 1 of 1: a member of db-approvers."
    )

    refused = portal(ana, "approve", str(req.pk))
    assert refused.returncode == 1
    assert refused.stderr.strip() == "jit: You cannot decide your own request."

    approved = portal(otto, "approve", str(req.pk), "--comment", "go ahead")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip() == f"Request #{req.pk} approved."

    status = portal(ana, "status", str(req.pk))
    assert status.returncode == 0, status.stderr
    grant = Grant.objects.get(request=req)
    assert f"Request #{req.pk}: approved" in status.stdout
    assert "decided:" in status.stdout and "by otto: go ahead" in status.stdout
    assert f"grant:       #{grant.pk} scheduled" in status.stdout

    lifecycle.provision_grant(grant.pk)  # what a worker does after the approval
    status = portal(ana, "status", str(req.pk))
    assert f"grant:       #{grant.pk} active until" in status.stdout

    released = portal(ana, "release", str(req.pk))
    assert released.returncode == 0, released.stderr
    assert (
        released.stdout.strip()
        == f"Releasing grant #{grant.pk} of request #{req.pk}: the access is being removed from appdb-cluster."
    )
    assert Grant.objects.get(pk=grant.pk).end_reason == "released"

    listing = portal(ana, "status")
    assert listing.returncode == 0
    header, row = listing.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "PROFILE", "FOR", "GRANT"]
    assert row.split() == [str(req.pk), "approved", "appdb-readonly", "30m", f"#{grant.pk}", "revoking", "(released)"]


def test_request_waits_for_approval_and_prints_working_shell_exports(portal, ana, otto, profile):  # noqa: F811 (pytest: the parameter is the imported fixture)
    waiting = portal.start(
        ana, "request", "appdb-readonly", "--for", "15m", "--why", JUSTIFICATION, "--env", "--poll", "0.2"
    )
    req = wait_for(lambda: AccessRequest.objects.filter(requester=ana).first())
    # Approved only once the CLI has said what it waits for (on a busy machine its first poll may come late).
    said = read_until(waiting.stderr, "waits for")
    assert f"Request #{req.pk} waits for step 1 of 1: a member of db-approvers." in said
    lifecycle.approve_request(req.pk, actor=otto, comment="ok")
    grant = Grant.objects.get(request=req)
    lifecycle.provision_grant(grant.pk)
    stdout, stderr = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, said + stderr
    exports = dict(
        line.removeprefix("export ").split("=", 1) for line in stdout.splitlines() if line.startswith("export ")
    )
    assert set(exports) == {"JIT_REQUEST_ID", "PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "DATABASE_URL"}
    assert exports["JIT_REQUEST_ID"] == str(req.pk)
    assert exports["PGUSER"] == Grant.objects.get(pk=grant.pk).external_ref
    # The printed credentials work on the target: eval them in a shell and log in.
    check = subprocess.run(
        ["sh", "-c", stdout + '\nprintf %s "$DATABASE_URL"'], capture_output=True, text=True, check=True
    )
    with psycopg.connect(check.stdout, connect_timeout=5) as conn:
        assert conn.execute("select current_user").fetchone()[0] == exports["PGUSER"]
    # Shown once: asking again is refused.
    again = portal(ana, "credentials", str(req.pk))
    assert again.returncode == 1
    assert "already shown once" in again.stderr


def test_a_denied_request_ends_the_wait_with_exit_code_1(portal, ana, otto, profile):  # noqa: F811 (pytest: the parameter is the imported fixture)
    waiting = portal.start(ana, "request", "appdb-readonly", "--for", "15m", "--why", JUSTIFICATION, "--poll", "0.2")
    req = wait_for(lambda: AccessRequest.objects.filter(requester=ana).first())
    denied = portal(otto, "deny", str(req.pk), "--comment", "use the replica")
    assert denied.returncode == 0, denied.stderr
    assert denied.stdout.strip() == f"Request #{req.pk} denied."
    stdout, stderr = waiting.communicate(timeout=30)
    assert waiting.returncode == 1
    assert stdout == ""
    assert stderr.splitlines()[-1] == f"jit: Request #{req.pk} was denied by otto: use the replica"


def test_the_portals_refusals_are_printed_with_the_option_at_fault(portal, ana, profile):  # noqa: F811 (pytest: the parameter is the imported fixture)
    result = portal(ana, "request", "appdb-readonly", "--for", "5h", "--why", JUSTIFICATION, "--no-wait")
    assert result.returncode == 1
    assert result.stderr.strip() == "jit: The longest this profile allows is 4 h. (--for)"
    result = portal(ana, "request", "appdb-readonly", "--for", "1h", "--why", "because", "--no-wait")
    assert result.stderr.strip() == "jit: Say why you need access in at least 20 characters. (--why)"


def test_a_bad_token_or_missing_configuration(portal, ana, db):  # noqa: F811 (pytest: the parameter is the imported fixture)
    result = portal(None, "profiles", token="jit_not-a-real-token")
    assert result.returncode == 1
    assert result.stderr.strip() == "jit: Unknown API token."
    result = portal(None, "profiles")
    assert result.returncode == 2
    assert "Set JIT_TOKEN" in result.stderr
    usage = portal(ana, "request", "appdb-readonly", "--for", "soon", "--why", "x")
    assert usage.returncode == 2
    assert "'soon' is not a duration" in usage.stderr


# Without a portal ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("1h", 3600), ("1h30m", 5400), ("1d", 86400), ("90", 5400), ("45s", 45)]
)
def test_durations_read_like_the_portals(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0m", "1x", "h", "-5m"])
def test_bad_durations_are_refused(text):
    with pytest.raises(Exception, match="not a duration"):
        parse_duration(text)


def test_the_environment_wins_over_the_config_file(tmp_path):
    path = tmp_path / "config"
    path.write_text("# jit\nurl = https://jit.example.com/\ntoken = jit_from_file\n")
    assert read_config({}, path) == ("https://jit.example.com", "jit_from_file")
    assert read_config({"JIT_TOKEN": "jit_from_env"}, path) == ("https://jit.example.com", "jit_from_env")
    with pytest.raises(ConfigError, match="JIT_URL must start with https://"):
        read_config({"JIT_URL": "jit.example.com", "JIT_TOKEN": "t"}, tmp_path / "missing")


def run_jit(url, home, *args):
    """Run `jit` with the token jit_secret-token against `url` (no portal behind it needed)."""
    env = jit_env(url, "jit_secret-token", home)
    return subprocess.run(command(*args), env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    "url", ["http://jit.example.com", "http://10.0.0.7:8000/", "HTTP://jit.example.com", "http://localhost.example.com"]
)
def test_a_plain_http_url_to_another_machine_is_refused_with_a_message_to_use_https(tmp_path, url):
    with pytest.raises(ConfigError, match=r"JIT_URL must use https:// .* would send your token in clear text"):
        read_config({"JIT_URL": url, "JIT_TOKEN": "t"}, tmp_path / "missing")
    result = run_jit(url, tmp_path, "profiles")
    assert result.returncode == 2
    assert "JIT_URL must use https://" in result.stderr


@pytest.mark.parametrize(
    "url", ["https://jit.example.com", "http://localhost:8000", "http://127.0.0.1:8000", "http://[::1]:8000"]
)
def test_https_anywhere_and_plain_http_to_this_machine_are_accepted(tmp_path, url):
    assert read_config({"JIT_URL": url, "JIT_TOKEN": "t"}, tmp_path / "missing") == (url, "t")


class Recorder:
    """A loopback HTTP server that records the Authorization header of each request and answers from `routes`."""

    def __init__(self):
        self.seen: list[tuple[str, str | None]] = []
        self.routes: dict[str, tuple[int, dict]] = {}  # path -> (status, headers); anything else: 200 []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                recorder.seen.append((self.path, self.headers.get("Authorization")))
                status, headers = recorder.routes.get(self.path, (200, {}))
                body = b"" if status != 200 else json.dumps([]).encode()
                self.send_response(status)
                headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorders():
    made = [Recorder(), Recorder()]  # two ports: two origins
    yield made
    for recorder in made:
        recorder.close()


def test_a_redirect_to_another_origin_does_not_carry_the_token(recorders, tmp_path):
    portal, elsewhere = recorders
    portal.routes["/api/v1/profiles"] = (302, {"Location": elsewhere.url + "/api/v1/profiles"})
    result = run_jit(portal.url, tmp_path, "profiles")
    assert result.returncode == 0, result.stderr
    assert portal.seen == [("/api/v1/profiles", "Bearer jit_secret-token")]
    assert elsewhere.seen == [("/api/v1/profiles", None)]


def test_a_redirect_within_the_portal_keeps_the_token(recorders, tmp_path):
    portal, _ = recorders
    portal.routes["/api/v1/inbox"] = (301, {"Location": "/api/v1/inbox/"})
    result = run_jit(portal.url, tmp_path, "inbox")
    assert result.returncode == 0, result.stderr
    assert "Nothing waits for your decision." in result.stderr
    assert portal.seen == [("/api/v1/inbox", "Bearer jit_secret-token"), ("/api/v1/inbox/", "Bearer jit_secret-token")]


def test_exports_are_shell_quoted():
    lines = env_lines(
        "postgres",
        {
            "username": "jit_g1",
            "password": "it's $secret",
            "host": "db",
            "port": "5432",
            "dbname": "app",
            "dsn": "postgresql://x",
        },
    )
    assert "export PGPASSWORD='it'\"'\"'s $secret'" in lines
    assert env_lines("aws", {"env": "export AWS_ACCESS_KEY_ID=A\nexport AWS_SECRET_ACCESS_KEY=B"}) == [
        "export AWS_ACCESS_KEY_ID=A",
        "export AWS_SECRET_ACCESS_KEY=B",
    ]
    assert env_lines("ssh", {"certificate": "ssh-ed25519-cert-v01@openssh.com AAAA", "key_id": "jit-g1"}) == [
        "export JIT_CERTIFICATE='ssh-ed25519-cert-v01@openssh.com AAAA'",
        "export JIT_KEY_ID=jit-g1",
    ]
