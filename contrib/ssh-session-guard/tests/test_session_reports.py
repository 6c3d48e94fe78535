"""The guard's session reports and recordings on their own: what it sends, how it signs it, what it keeps.

The guard runs under the system's python3, as on a host; a small HTTP server
(conftest.py's `portal`) stands for the portal and keeps what it is sent.
The portal's side (the SSH connector's endpoint) and the guard behind a real
sshd reporting to a live portal are tested in grants/tests/test_activity_ssh.py;
interactive sessions recorded behind a real sshd in test_pty_recording.py.
"""

import hashlib
import hmac
import json
import os
import subprocess
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from grants.connectors.ssh import ca as sshca

GUARD = Path(__file__).resolve().parents[1] / "jit-session-guard"
HOST_PYTHON = "/usr/bin/python3"
SECRET = "a1" * 32


def _run(tmp_path, command, *extra):
    ca = ed25519.Ed25519PrivateKey.generate()
    _, public = sshca.generate_user_key(comment="ana")
    cert = sshca.sign_user_certificate(
        ca, public, serial=42, key_id="jitportal-grant-42", principals=["ops"], valid_after=0,
        valid_before=int(time.time()) + 600,
    )  # fmt: skip
    (tmp_path / "auth-info").write_text(f"publickey {cert}\n")
    (tmp_path / "secret").write_text(SECRET + "\n")
    env = {
        "PATH": os.environ["PATH"],
        "SSH_ORIGINAL_COMMAND": command,
        "SSH_USER_AUTH": str(tmp_path / "auth-info"),
        "SSH_CONNECTION": "192.0.2.7 51234 192.0.2.1 22",
    }
    return subprocess.run(
        [HOST_PYTHON, str(GUARD), "--krl", str(tmp_path / "missing.krl"), "--report-secret-file",
         str(tmp_path / "secret"), "--report-host", "web-1", *extra],
        env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_each_session_is_reported_at_its_start_and_end_signed_with_the_hosts_secret(tmp_path, portal):
    done = _run(tmp_path, "echo hi; exit 3", "--report-url", portal.url)

    assert (done.returncode, done.stdout) == (3, "hi\n")
    reports = []
    for headers, body in portal.received:
        assert headers["X-Jit-Host"] == "web-1"
        signed = headers["X-Jit-Timestamp"].encode() + b"." + body
        assert headers["X-Jit-Signature"] == hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
        reports.append(json.loads(body))
    start, end = reports
    assert (start["serial"], start["key_id"], start["source"]) == (42, "jitportal-grant-42", "192.0.2.7 51234")
    assert "ended_at" not in start and end["session_id"] == start["session_id"]
    assert end["exit_status"] == 3 and end["ended_at"] >= start["started_at"] and "recording_sha256" not in end


def test_a_portal_that_cannot_be_reached_holds_up_nothing(tmp_path):
    done = _run(tmp_path, "echo still-runs", "--report-url", "http://127.0.0.1:9/nowhere", "--report-timeout", "1")
    assert (done.returncode, done.stdout) == (0, "still-runs\n")


def test_a_recorded_session_passes_its_output_on_and_reports_the_recordings_hash(tmp_path, portal):
    folder = tmp_path / "recordings"
    folder.mkdir()

    done = _run(tmp_path, "echo out; echo err >&2", "--report-url", portal.url, "--record-dir", str(folder))

    assert (done.returncode, done.stdout, done.stderr) == (0, "out\n", "err\n")
    [recording] = folder.iterdir()
    data = recording.read_bytes()
    assert b" 1 4\nout\n\n" in data and b" 2 4\nerr\n\n" in data
    end = json.loads(portal.received[-1][1])
    assert recording.name == end["session_id"] + ".rec"
    assert end["recording_sha256"] == hashlib.sha256(data).hexdigest()
