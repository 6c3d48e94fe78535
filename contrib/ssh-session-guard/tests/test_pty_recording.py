"""Interactive sessions (a terminal, `ssh -tt`) recorded by the guard, behind a real sshd.

The suite's kind of sshd (grants/tests/connectors/sshd_support.py, root needed) runs the guard as its
ForceCommand with --record-dir; conftest.py's `portal` stands for the portal and keeps the reports. The
client is ssh on a terminal of the test's own (a pty it reads and types into, with a window size it sets),
as a user's terminal emulator would be. What the guard kept is read back with `jit-session-guard --replay`,
as an auditor on the host would.
"""

import fcntl
import hashlib
import json
import os
import select
import shutil
import struct
import subprocess
import tempfile
import termios
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from grants.connectors.ssh import ca as sshca
from grants.tests.connectors import sshd_support

GUARD = Path(__file__).resolve().parents[1] / "jit-session-guard"
HOST_PYTHON = "/usr/bin/python3"
# Not the connector tests' accounts: with --dist loadfile the files may run at once, each removing what it created.
USER = "jitsshpty"
SECRET = "b2" * 32


@pytest.fixture(scope="module")
def account():
    if os.geteuid() != 0 or not sshd_support.available():
        pytest.fail("These tests need root and OpenSSH's server: apt-get install -y openssh-server.")
    created = sshd_support.ensure_user(USER)
    yield USER
    if created:
        sshd_support.remove_user(USER)


@pytest.fixture
def start_host(account, portal, monkeypatch):
    """Start an sshd whose guard records into a folder and reports to `portal`; stop it after the test."""
    ca = ed25519.Ed25519PrivateKey.generate()
    # Not pytest's tmp_path (0700): the guard runs as USER and reads the KRL and its secret.
    base = Path(tempfile.mkdtemp(prefix="jitportal-sshpty-"))
    base.chmod(0o755)
    krl = base / "jit.krl"
    krl.write_bytes(sshca.build_krl(sshca.public_key_line(ca), []))  # sshd refuses every key without one
    krl.chmod(0o644)
    secret = base / "report.secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o644)
    servers = []

    def start(recordings_mode=0o1777, terminals=None):
        if terminals:
            # sshd in a mount namespace of its own, on a devpts instance holding `terminals` ptys at most.
            wrapper = base / "sshd-with-few-terminals"
            wrapper.write_text(
                "#!/bin/sh\n"
                f"exec unshare --mount --propagation private sh -c 'mount -t devpts -o newinstance,ptmxmode=0666,"
                f"mode=0620,max={terminals} devpts /dev/pts && mount --bind /dev/pts/ptmx /dev/ptmx && "
                f'exec {sshd_support.SSHD} "$@"\' sshd "$@"\n'
            )
            wrapper.chmod(0o755)
            monkeypatch.setattr(sshd_support, "SSHD", str(wrapper))
        recordings = base / "recordings"
        recordings.mkdir()
        recordings.chmod(recordings_mode)
        (base / "sshd").mkdir()
        (base / "sshd").chmod(0o755)
        server = sshd_support.SSHServer(
            base / "sshd",
            ca_public_key=sshca.public_key_line(ca),
            krl=str(krl),
            principals={USER: ["ops"]},
            user=USER,
            guard_args=f"--report-url {portal.url} --report-secret-file {secret} --report-host web-1"
            f" --record-dir {recordings}",
        )
        server.ca, server.recordings = ca, recordings
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()
    shutil.rmtree(base, ignore_errors=True)


def _identity(server, folder, *, seconds=600):
    """Write a key and a certificate with permit-pty, valid for `seconds`; return their paths and its end."""
    private, public = sshca.generate_user_key(comment="ana@laptop")
    valid_before = int(time.time()) + seconds
    cert_line = sshca.sign_user_certificate(
        server.ca, public, serial=42, key_id="jitportal-grant-42", principals=["ops"], valid_after=0,
        valid_before=valid_before, extensions=["permit-pty"],
    )  # fmt: skip
    key, cert = folder / "id", folder / "id-cert.pub"
    key.write_text(private)
    key.chmod(0o600)
    cert.write_text(cert_line + "\n")
    return key, cert, valid_before


def _size(rows, cols):
    return struct.pack("HHHH", rows, cols, 0, 0)


class Terminal:
    """`ssh -tt` on a pty of the test's own, its controlling terminal: what the user sees and types."""

    def __init__(self, server, key, cert, rows, cols):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, _size(rows, cols))
        self.proc = subprocess.Popen(
            server.ssh_args(key, cert, "-tt"), stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            # Its controlling terminal, so that a resize sends ssh SIGWINCH.
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )  # fmt: skip
        os.close(slave)
        self.seen = b""

    def type(self, text):
        os.write(self.master, text.encode())

    def resize(self, rows, cols):
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, _size(rows, cols))

    def read_until(self, marker: bytes, timeout: float) -> bool:
        """Read what the terminal shows until `marker` is among it; False if it is not within `timeout`."""
        deadline = time.monotonic() + timeout
        while marker not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                return False
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: ssh has exited and closed the terminal
                chunk = b""
            if not chunk:
                return False
            self.seen += chunk
        return True

    def wait(self, timeout: float) -> int:
        """Read until ssh exits; return its exit status."""
        deadline = time.monotonic() + timeout
        while self.read_until(b"\0never shown\0", max(0.1, deadline - time.monotonic())) is False:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
        return self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


def _replay(path, *extra):
    done = subprocess.run([HOST_PYTHON, str(GUARD), "--replay", str(path), *extra], capture_output=True, timeout=20)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _reports(portal):
    return [json.loads(body) for _headers, body in portal.received]


def test_an_interactive_session_is_recorded_both_ways_and_its_hash_reported(start_host, portal, tmp_path):
    host = start_host()
    key, cert, _ = _identity(host, tmp_path)
    term = Terminal(host, key, cert, rows=33, cols=101)
    try:
        term.type("stty size; echo hello-$((6*7))\n")
        assert term.read_until(b"hello-42", timeout=15), term.seen + host.log_text()[-2000:].encode()
        started_size = term.seen
        term.resize(40, 120)
        # ssh passes the new size on when its SIGWINCH comes through; ask until the session's terminal has it.
        resized = False
        for _ in range(50):
            term.type("stty size\n")
            if term.read_until(b"40 120", timeout=0.3):
                resized = True
                break
        # More than the relay holds for a side at once: nothing lost, nothing stuck.
        term.type("seq 1 40000; echo done-$((1+1))\n")
        assert term.read_until(b"done-2", timeout=30), term.seen[-2000:]
        term.type("exit 3\n")
        status = term.wait(timeout=15)
    finally:
        term.close()

    assert b"33 101" in started_size and resized
    assert status == 3
    start, end = _reports(portal)
    assert end["session_id"] == start["session_id"] and end["exit_status"] == 3 and "ended_by" not in end
    [recording] = host.recordings.iterdir()
    assert recording.name == end["session_id"] + ".rec"
    assert hashlib.sha256(recording.read_bytes()).hexdigest() == end["recording_sha256"]
    output = _replay(recording)
    assert b"33 101\r\n" in output and b"hello-42\r\n" in output and b"40 120\r\n" in output
    lines = b"".join(b"%d\r\n" % i for i in range(1, 40001))
    assert lines in output and lines in term.seen
    typed = _replay(recording, "--streams", "0")
    assert b"stty size; echo hello-$((6*7))\n" in typed and typed.endswith(b"exit 3\n")
    # The window sizes the output was drawn for, as a replay needs them: at the start, then the resize.
    assert _replay(recording, "--streams", "3") == b"33 101\n40 120\n"


def test_ctrl_c_on_the_users_terminal_interrupts_the_sessions_foreground_job(start_host, portal, tmp_path):
    # The user's terminal is raw while the guard relays: ^C is a byte, and the guard's terminal makes it SIGINT.
    host = start_host()
    key, cert, _ = _identity(host, tmp_path)
    term = Terminal(host, key, cert, rows=24, cols=80)
    try:
        term.type("sleep 97\n")
        for _ in range(100):
            running = subprocess.run(["pgrep", "-u", USER, "-f", "sleep 97"], capture_output=True).stdout
            if running:
                break
            time.sleep(0.1)
        term.type("\x03")
        term.type("echo after-$((1+1))\n")
        interrupted = term.read_until(b"after-2", timeout=15)
        left = subprocess.run(["pgrep", "-u", USER, "-f", "sleep 97"], capture_output=True).stdout
        term.type("exit\n")
        status = term.wait(timeout=15)
    finally:
        term.close()

    assert running and interrupted and left == b"", term.seen
    assert status == 0
    assert b"\x03" in _replay(host.recordings / (_reports(portal)[-1]["session_id"] + ".rec"), "--streams", "0")


def test_an_interactive_session_ends_at_expiry_with_its_recording_closed_and_reported(start_host, portal, tmp_path):
    host = start_host()
    key, cert, valid_before = _identity(host, tmp_path, seconds=8)
    term = Terminal(host, key, cert, rows=24, cols=80)
    try:
        # A background job: a process group of its own in the session on the guard's terminal.
        term.type("sleep 79 & echo started-$((40+2))\n")
        assert term.read_until(b"started-42", timeout=15), term.seen + host.log_text()[-2000:].encode()
        status = term.wait(timeout=max(0.0, valid_before - time.time()) + 15)
        leftovers = subprocess.run(["pgrep", "-u", USER, "-f", "sleep 79"], capture_output=True, text=True).stdout
    finally:
        term.close()

    assert status == 1
    # At the start of a line, CR LF: the user's terminal has its own modes back, not the relay's raw mode.
    assert b"\r\njitportal: access ended (expired)\r\n" in term.seen
    assert leftovers == ""
    end = _reports(portal)[-1]
    assert (end["ended_by"], end["exit_status"]) == ("expired", 1)
    [recording] = host.recordings.iterdir()
    assert hashlib.sha256(recording.read_bytes()).hexdigest() == end["recording_sha256"]
    output = _replay(recording)
    assert b"started-42" in output and output.endswith(b"\njitportal: access ended (expired)\n")


def test_a_terminal_that_stops_reading_does_not_keep_a_recorded_session_past_expiry(start_host, portal, tmp_path):
    # The user's side stops reading (the test does not read its terminal) while the session floods it: every
    # buffer on the way fills up and the guard's writes to the user's terminal would block, were they allowed to.
    host = start_host()
    key, cert, valid_before = _identity(host, tmp_path, seconds=8)
    term = Terminal(host, key, cert, rows=24, cols=80)
    try:
        term.type("echo started-$((40+2)); yes flood\n")
        assert term.read_until(b"started-42", timeout=15), term.seen + host.log_text()[-2000:].encode()
        deadline = time.monotonic() + max(0.0, valid_before - time.time()) + 15
        while len(portal.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        reports = _reports(portal)
        flooding = subprocess.run(["pgrep", "-u", USER, "-f", "yes flood"], capture_output=True, text=True).stdout
    finally:
        term.close()

    assert len(reports) == 2, "no end report while the terminal was not read"
    assert reports[1]["ended_by"] == "expired" and flooding == ""
    [recording] = host.recordings.iterdir()
    assert hashlib.sha256(recording.read_bytes()).hexdigest() == reports[1]["recording_sha256"]


def test_revoking_the_certificate_ends_a_recorded_interactive_session(start_host, portal, tmp_path):
    host = start_host()
    key, cert, _ = _identity(host, tmp_path)
    term = Terminal(host, key, cert, rows=24, cols=80)
    try:
        term.type("echo started-$((40+2))\n")
        assert term.read_until(b"started-42", timeout=15), term.seen + host.log_text()[-2000:].encode()
        krl = Path(host.krl)
        (krl.parent / "jit.krl.new").write_bytes(sshca.build_krl(sshca.public_key_line(host.ca), [42]))
        (krl.parent / "jit.krl.new").chmod(0o644)
        os.replace(krl.parent / "jit.krl.new", krl)  # as the host's cron job publishes it
        status = term.wait(timeout=15)
    finally:
        term.close()

    assert status == 1 and b"\r\njitportal: access ended (revoked)\r\n" in term.seen
    end = _reports(portal)[-1]
    assert (end["ended_by"], end["exit_status"]) == ("revoked", 1)
    [recording] = host.recordings.iterdir()
    assert hashlib.sha256(recording.read_bytes()).hexdigest() == end["recording_sha256"]
    assert _replay(recording).endswith(b"\njitportal: access ended (revoked)\n")


def test_a_dropped_connection_hangs_up_the_recorded_session_and_reports_it(start_host, portal, tmp_path):
    host = start_host()
    key, cert, _ = _identity(host, tmp_path)
    term = Terminal(host, key, cert, rows=24, cols=80)
    try:
        term.type("sleep 78 & echo started-$((40+2))\n")
        assert term.read_until(b"started-42", timeout=15), term.seen + host.log_text()[-2000:].encode()
        term.proc.kill()
        # sshd notices the drop, the guard hangs the session up and sends its end report.
        for _ in range(200):
            if len(portal.received) == 2:
                break
            time.sleep(0.1)
        leftovers = subprocess.run(["pgrep", "-u", USER, "-f", "sleep 78"], capture_output=True, text=True).stdout
    finally:
        term.close()

    start, end = _reports(portal)
    assert end["exit_status"] == 128 + 1  # the shell's SIGHUP
    assert leftovers == ""
    [recording] = host.recordings.iterdir()
    assert hashlib.sha256(recording.read_bytes()).hexdigest() == end["recording_sha256"]
    assert b"started-42" in _replay(recording)


def test_a_dropped_connection_ends_a_recorded_shell_that_sighup_did_not_end_as_its_terminal_hangs_up(
    start_host, portal, tmp_path
):
    # On a plain sshd a dropped connection hangs up the session's terminal, and a shell that SIGHUP did not end
    # (here `trap '' HUP`; bash does the same when SIGHUP comes between two commands, its handler only takes
    # note) ends at its terminal's end, and exits as at the end of its input. The guard's terminal hangs up too.
    host = start_host()
    key, cert, _ = _identity(host, tmp_path)
    term = Terminal(host, key, cert, rows=24, cols=80)
    try:
        term.type("trap '' HUP; echo started-$((40+2))\n")
        assert term.read_until(b"started-42", timeout=15), term.seen + host.log_text()[-2000:].encode()
        term.proc.kill()
        for _ in range(200):
            if len(portal.received) == 2:
                break
            time.sleep(0.1)
    finally:
        term.close()

    start, end = _reports(portal)
    assert end["exit_status"] == 0 and "ended_by" not in end  # not 128 + 9: the guard's SIGKILL after --grace
    [recording] = host.recordings.iterdir()
    assert hashlib.sha256(recording.read_bytes()).hexdigest() == end["recording_sha256"]
    assert b"started-42" in _replay(recording)


def test_an_interactive_session_that_cannot_be_recorded_still_runs(start_host, portal, tmp_path):
    # The guard cannot write the folder (root's, 0755): no recording, a syslog warning, the session as usual.
    host = start_host(recordings_mode=0o755)
    key, cert, _ = _identity(host, tmp_path)
    term = Terminal(host, key, cert, rows=33, cols=101)
    try:
        term.type("stty size; echo hello-$((6*7)); exit 4\n")
        status = term.wait(timeout=15)
    finally:
        term.close()

    assert status == 4 and b"33 101" in term.seen and b"hello-42" in term.seen
    end = _reports(portal)[-1]
    assert end["exit_status"] == 4 and "recording_sha256" not in end
    assert list(host.recordings.iterdir()) == []


def test_an_interactive_session_runs_unrecorded_when_the_guard_gets_no_terminal_of_its_own(
    start_host, portal, tmp_path
):
    # One pty on sshd's devpts: the user's session takes it, the guard's openpty() fails (ENOSPC).
    host = start_host(terminals=1)
    key, cert, _ = _identity(host, tmp_path)
    term = Terminal(host, key, cert, rows=33, cols=101)
    try:
        term.type("stty size; echo hello-$((6*7)); exit 5\n")
        status = term.wait(timeout=15)
    finally:
        term.close()

    assert status == 5 and b"33 101" in term.seen and b"hello-42" in term.seen, term.seen + host.log_text().encode()
    end = _reports(portal)[-1]
    assert end["exit_status"] == 5 and "recording_sha256" not in end
    assert list(host.recordings.iterdir()) == []


def test_replay_says_plainly_what_is_wrong_with_a_file_that_is_not_a_recording(tmp_path):
    cut = tmp_path / "cut.rec"
    cut.write_bytes(b"0.010 1 6\nhello\n\n0.020 1 50\nshort")
    done = subprocess.run([HOST_PYTHON, str(GUARD), "--replay", str(cut)], capture_output=True, timeout=20)

    assert done.returncode == 2 and done.stdout == b"hello\n"
    assert b"cut short (5 of 50 bytes)" in done.stderr
