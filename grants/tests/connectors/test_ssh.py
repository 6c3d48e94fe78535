"""SSHConnector, the CA helpers and the session guard, against a real sshd the tests start.

Grants and targets are plain namespaces: the connector never touches the
portal's database. sshd runs as root on a loopback port (see
sshd_support.py) and the logins go to a local account, `jitssh`, created if
missing. Expiry tests use certificates valid for a few seconds. The guard's
own tests (its certificate parser, the sessions it refuses before anything
runs) are beside it, in contrib/ssh-session-guard/tests.
"""

import contextlib
import datetime
import itertools
import os
import pwd
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

from grants.connectors.base import ConnectorError
from grants.connectors.ssh import SSHConnector
from grants.connectors.ssh import ca as sshca
from grants.connectors.ssh.connector import CLOCK_SKEW_S

from . import sshd_support

SECRET_ENV = "JIT_TEST_SSH_CA_KEY"
USER = "jitssh"
_grant_ids = itertools.count(1001)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir():
    # Not pytest's tmp_path (0700 under /tmp/pytest-of-root): the guard runs as
    # the test user and must read the KRL.
    base = Path(tempfile.mkdtemp(prefix="jitportal-ssh-"))
    base.chmod(0o755)
    (base / "ca").mkdir(mode=0o700)
    (base / "krl").mkdir()
    (base / "krl").chmod(0o755)  # not mkdir's mode, which the umask can narrow
    sshca.generate_ca(base / "ca" / "ca_key")
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def ca_env(workdir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SECRET_ENV, str(workdir / "ca" / "ca_key"))
        yield workdir / "ca" / "ca_key"


def _target(workdir, **config):
    base = {"krl_path": str(workdir / "krl" / "jit.krl"), "host": "127.0.0.1", "user_hint": USER}
    return SimpleNamespace(name="demo-ssh", kind="ssh", config={**base, **config}, secret_env=SECRET_ENV)


@pytest.fixture(scope="module")
def sshd(workdir, ca_env):
    if os.geteuid() != 0 or not sshd_support.available():
        pytest.fail("These tests need root and OpenSSH's server: apt-get install -y openssh-server.")
    created = sshd_support.ensure_user(USER)
    connector = SSHConnector(_target(workdir))
    # sshd refuses every key while its RevokedKeys file is missing.
    connector.publish_krl()
    (workdir / "sshd").mkdir()
    (workdir / "sshd").chmod(0o755)
    server = sshd_support.SSHServer(
        workdir / "sshd",
        ca_public_key=connector.ca_public_key(),
        krl=connector.krl_path,
        principals={USER: ["ops", "ops-admin"]},
        user=USER,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        if created:
            sshd_support.remove_user(USER)


@pytest.fixture
def target(workdir, ca_env, sshd):
    return _target(workdir, port=sshd.port)


@pytest.fixture
def connector(target):
    with SSHConnector(target) as c:
        yield c


def make_grant(*, seconds=600, principals=("ops",), public_key=None, **scope):
    params = {"public_key": public_key} if public_key else {}
    return SimpleNamespace(
        pk=next(_grant_ids),
        starts_at=_now(),
        expires_at=_now() + datetime.timedelta(seconds=seconds),
        scope={"principals": list(principals), **scope},
        params=params,
    )


@pytest.fixture
def identity(tmp_path):
    """Write a private key and its certificate where ssh wants them (0600); return their paths."""

    def write(private_key: str, certificate: str, name="id"):
        key = tmp_path / name
        key.write_text(private_key)
        key.chmod(0o600)
        cert = tmp_path / (name + "-cert.pub")
        cert.write_text(certificate + "\n")
        return key, cert

    return write


def _provision_with_own_key(connector, identity, grant_kwargs=None):
    private, public = sshca.generate_user_key(comment="ana@laptop")
    grant = make_grant(public_key=public, **(grant_kwargs or {}))
    result = connector.provision(grant)
    key, cert = identity(private, result.credentials["certificate"], name=f"g{grant.pk}")
    return grant, result, key, cert


def _read_until(proc, marker: str, timeout: float) -> str:
    """Read the process's stdout until `marker` shows up; return what was read."""
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while marker.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"{marker!r} not seen within {timeout} s; got {seen!r}")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise AssertionError(f"output ended before {marker!r}; got {seen!r}")
        seen += chunk
    return seen.decode(errors="replace")


def _live_processes_of(user: str, marker: str) -> list[int]:
    """Return pids of the user's processes (not zombies) whose command line contains `marker`."""
    uid = pwd.getpwnam(user).pw_uid
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(name))
    return found


def _wait_for_processes_of(user: str, marker: str, timeout: float = 5) -> list[int]:
    deadline = time.monotonic() + timeout
    while not (found := _live_processes_of(user, marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def _kill_leftovers(user: str, *markers: str) -> None:
    """Kill what a failed test left running, so that it cannot confuse the next one."""
    for marker in markers:
        for pid in _live_processes_of(user, marker):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


# -- logins against sshd ---------------------------------------------------------


def test_certificate_for_the_users_own_key_logs_in_inside_its_window(connector, sshd, identity):
    grant, result, key, cert = _provision_with_own_key(connector, identity)

    done = sshd.run(key, cert, "echo ok; id -un")

    assert done.returncode == 0, done.stderr + sshd.log_text()[-2000:]
    assert done.stdout.split() == ["ok", USER]
    assert result.external_ref == f"serial:{grant.pk}"
    assert "private_key" not in result.credentials
    assert result.credentials["ssh_command"] == (
        f"ssh -o CertificateFile=~/.ssh/jitportal-grant-{grant.pk}-cert.pub -p {sshd.port} {USER}@127.0.0.1"
    )


def test_certificate_carries_the_grant_window_principals_and_only_the_profiles_permissions(connector, identity):
    grant = make_grant(
        seconds=600, principals=["ops", "ops-admin"], options={"permit-pty": True, "permit-port-forwarding": False}
    )

    result = connector.provision(grant)

    info = sshca.parse_certificate(result.credentials["certificate"])
    assert info.serial == grant.pk
    assert info.key_id == f"jitportal-grant-{grant.pk}"
    assert info.principals == ("ops", "ops-admin")
    assert info.extensions == ("permit-pty",)
    assert info.critical_options == {}
    # Never later than the grant's expiry; backdated only for hosts whose clock lags.
    assert grant.expires_at.timestamp() - 1 < info.valid_before <= grant.expires_at.timestamp()
    assert info.valid_after == int(grant.starts_at.timestamp()) - CLOCK_SKEW_S
    assert result.expires_at.timestamp() == info.valid_before
    assert info.ca_public_key.split()[:2] == connector.ca_public_key().split()[:2]


def test_generated_key_pair_is_returned_once_and_logs_in(connector, sshd, identity):
    grant = make_grant()

    creds = connector.provision(grant).credentials

    assert creds["private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert creds["ssh_command"] == f"ssh -i ~/.ssh/jitportal-grant-{grant.pk} -p {sshd.port} {USER}@127.0.0.1"
    key, cert = identity(creds["private_key"], creds["certificate"])
    done = sshd.run(key, cert, "echo ok")
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr


def test_login_is_refused_after_expiry(connector, sshd, identity):
    grant, result, key, cert = _provision_with_own_key(connector, identity, {"seconds": 3})
    assert sshd.run(key, cert, "echo ok").stdout.strip() == "ok"

    _sleep_until(result.expires_at.timestamp() + 0.2)

    done = sshd.run(key, cert, "echo ok")
    assert done.returncode == 255 and "Permission denied" in done.stderr
    assert "expired" in sshd.log_text()


def test_login_is_refused_after_early_revocation(connector, sshd, identity):
    grant, result, key, cert = _provision_with_own_key(connector, identity)
    assert connector.is_present(grant)

    connector.revoke(grant)

    done = sshd.run(key, cert, "echo ok")
    assert done.returncode == 255 and "Permission denied" in done.stderr
    assert "revoked" in sshd.log_text().lower()
    assert not connector.is_present(grant)


def test_principal_the_host_does_not_map_to_the_account_is_refused(connector, sshd, identity):
    grant, result, key, cert = _provision_with_own_key(connector, identity, {"principals": ["dba"]})

    done = sshd.run(key, cert, "echo ok")

    assert done.returncode == 255 and "Permission denied" in done.stderr


def test_profile_force_command_runs_instead_of_the_users_command(connector, sshd, identity):
    # sshd's own ForceCommand (the guard) overrides the certificate's
    # force-command option, so the guard has to apply it.
    scope = {"force_command": 'echo "forced, asked for: $SSH_ORIGINAL_COMMAND"'}
    grant, result, key, cert = _provision_with_own_key(connector, identity, scope)

    done = sshd.run(key, cert, "id")

    assert done.stdout.strip() == "forced, asked for: id", done.stderr


def test_source_address_outside_the_profile_is_refused(connector, sshd, identity):
    grant, result, key, cert = _provision_with_own_key(connector, identity, {"source_address": ["192.0.2.0/24"]})

    done = sshd.run(key, cert, "echo ok")

    assert done.returncode == 255 and "Permission denied" in done.stderr


# -- open sessions and the guard --------------------------------------------------


def test_open_session_ends_within_seconds_of_expiry(connector, sshd, identity):
    grant, result, key, cert = _provision_with_own_key(connector, identity, {"seconds": 4})
    proc = subprocess.Popen(
        sshd.ssh_args(key, cert) + ["sleep 71 & echo started; exec sleep 72"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _read_until(proc, "started", timeout=5)
        assert proc.poll() is None

        proc.wait(timeout=max(0.0, result.expires_at.timestamp() - time.time()) + 5)
        ended = time.time()
    finally:
        proc.kill()
        proc.wait()
        leftovers = _live_processes_of(USER, "sleep 71") + _live_processes_of(USER, "sleep 72")
        _kill_leftovers(USER, "sleep 71", "sleep 72")

    assert ended - result.expires_at.timestamp() < 3
    assert "jitportal: access ended (expired)" in proc.stderr.read().decode()
    assert proc.returncode == 1
    assert leftovers == []


def test_open_session_ends_within_seconds_of_revocation(connector, sshd, identity):
    grant, result, key, cert = _provision_with_own_key(connector, identity)
    proc = subprocess.Popen(
        sshd.ssh_args(key, cert) + ["sleep 73 & echo started; exec sleep 74"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _read_until(proc, "started", timeout=5)

        revoked = time.time()
        connector.revoke(grant)

        proc.wait(timeout=6)
        ended = time.time()
    finally:
        proc.kill()
        proc.wait()
        leftovers = _live_processes_of(USER, "sleep 73") + _live_processes_of(USER, "sleep 74")
        _kill_leftovers(USER, "sleep 73", "sleep 74")

    assert ended - revoked < 4
    assert "jitportal: access ended (revoked)" in proc.stderr.read().decode()
    assert leftovers == []


def test_interactive_shell_on_a_terminal_works_and_ends_on_revocation(connector, sshd, identity):
    # The guard hands the terminal to the shell's process group; if it did
    # not, an interactive bash would stop itself (SIGTTIN) and never answer.
    grant, result, key, cert = _provision_with_own_key(connector, identity)
    proc = subprocess.Popen(
        sshd.ssh_args(key, cert, "-tt"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        # With job control the background job gets a process group of its
        # own, but stays in the login session, which the guard also ends.
        proc.stdin.write(b"sleep 75 & echo hello-$((40+2))\n")
        proc.stdin.flush()
        _read_until(proc, "hello-42", timeout=8)
        assert _wait_for_processes_of(USER, "sleep 75")

        connector.revoke(grant)

        proc.wait(timeout=6)
        output = proc.stdout.read().decode(errors="replace")
    finally:
        proc.kill()
        proc.wait()
        leftovers = _live_processes_of(USER, "sleep 75")
        _kill_leftovers(USER, "sleep 75")

    assert "jitportal: access ended (revoked)" in output
    assert leftovers == []


def test_dropped_connection_hangs_up_the_sessions_background_jobs(connector, sshd, identity):
    # A shell that sees its terminal vanish may exit as on end of input,
    # leaving its jobs running; the guard, as the session leader, hangs them up.
    grant, result, key, cert = _provision_with_own_key(connector, identity)
    proc = subprocess.Popen(
        sshd.ssh_args(key, cert, "-tt"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        proc.stdin.write(b"sleep 76 & echo hello-$((40+2))\n")
        proc.stdin.flush()
        _read_until(proc, "hello-42", timeout=8)
        assert _wait_for_processes_of(USER, "sleep 76")

        proc.kill()
        proc.wait()

        deadline = time.monotonic() + 20  # generous: sshd notices the drop, then the guard hangs up
        while _live_processes_of(USER, "sleep 76") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
        leftovers = _live_processes_of(USER, "sleep 76")
        _kill_leftovers(USER, "sleep 76")

    assert leftovers == []


def test_sftp_runs_through_the_guard(connector, sshd, identity, tmp_path):
    # The guard runs the subsystem's command; internal-sftp could not run there.
    grant, result, key, cert = _provision_with_own_key(connector, identity)
    batch = tmp_path / "batch"
    batch.write_text("pwd\n")

    done = subprocess.run(
        ["sftp", "-b", str(batch), *sshd.ssh_args(key, cert)[1:]],
        capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert f"/home/{USER}" in done.stdout


# -- revocation bookkeeping -------------------------------------------------------


def test_revoking_twice_or_revoking_what_was_never_issued_succeeds(connector):
    grant = make_grant()
    connector.provision(grant)

    connector.revoke(grant)
    connector.revoke(grant)
    connector.revoke(make_grant())

    assert not connector.is_present(grant)
    revoked = Path(connector.krl_path + ".revoked").read_text().splitlines()
    assert [line.split()[0] for line in revoked].count(str(grant.pk)) == 1


def test_a_revoked_grant_cannot_be_provisioned_again(connector):
    grant = make_grant()
    connector.provision(grant)
    connector.revoke(grant)

    with pytest.raises(ConnectorError, match="cannot be provisioned again") as info:
        connector.provision(grant)

    assert info.value.permanent


def test_is_present_reads_the_published_krl_not_the_bookkeeping(connector, workdir):
    grant = make_grant()
    assert not connector.is_present(grant)
    connector.provision(grant)
    assert connector.is_present(grant)

    # Revoked in the bookkeeping but the KRL was never republished (a crash
    # in between): the target still lets the certificate in.
    with open(connector.krl_path + ".revoked", "a") as fh:
        fh.write(f"{grant.pk} by-hand\n")
    assert connector.is_present(grant)

    connector.publish_krl()
    assert not connector.is_present(grant)


def test_expired_certificate_is_not_present(connector):
    grant = make_grant(seconds=2)
    result = connector.provision(grant)

    _sleep_until(result.expires_at.timestamp())

    assert not connector.is_present(grant)


def test_list_managed_lists_live_certificates_only(connector):
    live, revoked, short = make_grant(), make_grant(), make_grant(seconds=2)
    short_until = [connector.provision(grant) for grant in (live, revoked, short)][-1].expires_at
    connector.revoke(revoked)
    _sleep_until(short_until.timestamp())

    managed = connector.list_managed()

    assert f"serial:{live.pk}" in managed
    assert not managed & {f"serial:{revoked.pk}", f"serial:{short.pk}"}


def test_krl_is_world_readable_and_served_as_published(connector):
    connector.revoke(make_grant())

    data = connector.krl_bytes()

    assert data.startswith(b"SSHKRL\n")
    assert data == Path(connector.krl_path).read_bytes()
    assert stat.S_IMODE(os.stat(connector.krl_path).st_mode) == 0o644


def test_a_torn_line_in_the_revoked_file_is_dropped_not_misread(connector):
    # "12" torn to "1" must not revoke serial 1, nor merge with the next line.
    path = connector.krl_path + ".revoked"
    with open(path, "a") as fh:
        fh.write("1")
    grant = make_grant()

    connector.revoke(grant)

    lines = Path(path).read_text().splitlines()
    assert lines[-1].split()[0] == str(grant.pk)
    assert "1" not in [line.split()[0] for line in lines]


# -- configuration errors -----------------------------------------------------------


@pytest.mark.parametrize(
    "scope, message",
    [
        ({"principals": []}, "non-empty list"),
        ({}, "non-empty list"),
        ({"principals": "ops"}, "non-empty list"),
        ({"principals": ["ops", "bad name"]}, "invalid principal"),
        ({"principals": ["ops"], "options": {"permit-everything": True}}, "unknown certificate option"),
        ({"principals": ["ops"], "options": {"permit-pty": "yes"}}, "true or false"),
        ({"principals": ["ops"], "source_address": ["not-an-ip"]}, "invalid source address"),
        ({"principals": ["ops"], "force_command": "a\nb"}, "one-line command"),
    ],
)
def test_invalid_scope_is_a_permanent_error_and_issues_nothing(connector, scope, message):
    grant = make_grant()
    grant.scope = scope

    with pytest.raises(ConnectorError, match=message) as info:
        connector.provision(grant)

    assert info.value.permanent
    assert f"serial:{grant.pk}" not in connector.list_managed()


def test_expired_grant_gets_no_certificate(connector):
    grant = make_grant(seconds=-1)

    with pytest.raises(ConnectorError, match="already expired") as info:
        connector.provision(grant)

    assert info.value.permanent


def test_extend_is_refused_because_validity_is_signed_into_the_certificate(connector):
    with pytest.raises(ConnectorError, match="new certificate") as info:
        connector.extend(make_grant())

    assert info.value.permanent


def test_check_passes_once_the_krl_is_published(connector):
    connector.publish_krl()

    assert connector.check() == []


def test_check_warns_about_a_ca_key_others_can_read_and_an_unpublished_krl(tmp_path, monkeypatch):
    key = tmp_path / "ca"
    sshca.generate_ca(key)
    key.chmod(0o640)
    monkeypatch.setenv("JIT_TEST_SSH_CA_KEY_FILE", str(tmp_path / "ca-path"))
    (tmp_path / "ca-path").write_text(str(key) + "\n")
    target = SimpleNamespace(name="t", kind="ssh", config={}, secret_env="JIT_TEST_SSH_CA_KEY")
    monkeypatch.delenv("JIT_TEST_SSH_CA_KEY", raising=False)

    warnings = SSHConnector(target).check()

    assert any("readable by others" in w for w in warnings)
    assert any("No KRL has been published" in w and str(key) + ".krl" in w for w in warnings)


def test_check_rejects_a_missing_variable_an_encrypted_key_and_an_unwritable_krl_folder(tmp_path, monkeypatch):
    target = SimpleNamespace(name="t", kind="ssh", config={}, secret_env="JIT_TEST_SSH_CA_KEY")
    monkeypatch.delenv("JIT_TEST_SSH_CA_KEY", raising=False)
    monkeypatch.delenv("JIT_TEST_SSH_CA_KEY_FILE", raising=False)
    with pytest.raises(ConnectorError, match="not set"):
        SSHConnector(target).check()

    encrypted = tmp_path / "enc"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret-pass", "-f", str(encrypted)], check=True)
    monkeypatch.setenv("JIT_TEST_SSH_CA_KEY", str(encrypted))
    with pytest.raises(ConnectorError, match="encrypted") as info:
        SSHConnector(target).check()
    assert info.value.permanent

    sshca.generate_ca(tmp_path / "ok")
    monkeypatch.setenv("JIT_TEST_SSH_CA_KEY", str(tmp_path / "ok"))
    target.config = {"krl_path": str(tmp_path / "no-such-folder" / "jit.krl")}
    with pytest.raises(ConnectorError, match="not a writable folder"):
        SSHConnector(target).check()


# -- CA keys and public keys -----------------------------------------------------------


def test_generate_ca_writes_a_private_key_only_root_reads_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "ca_key"

    public = sshca.generate_ca(path)

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert (tmp_path / "ca_key.pub").read_text().strip() == public
    assert public.startswith("ssh-ed25519 ")
    assert sshca.public_key_line(sshca.load_ca(path)) == " ".join(public.split()[:2])
    with pytest.raises(FileExistsError):
        sshca.generate_ca(path)


def _openssh_public(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def test_validate_public_key_accepts_modern_keys_and_drops_the_comment():
    _, ed = sshca.generate_user_key(comment="ana@laptop")
    ecdsa = _openssh_public(ec.generate_private_key(ec.SECP384R1()))
    rsa3072 = _openssh_public(rsa.generate_private_key(public_exponent=65537, key_size=3072))

    assert sshca.validate_public_key(f"  {ed}\n") == " ".join(ed.split()[:2])
    assert sshca.validate_public_key(ecdsa + " me") == ecdsa
    assert sshca.validate_public_key(rsa3072) == rsa3072


@pytest.mark.parametrize(
    "make_text, message",
    [
        (lambda: "", "Paste your OpenSSH public key"),
        (lambda: "hello world", "Unsupported key type"),
        (lambda: "ssh-ed25519 not*base64", "not valid base64"),
        (lambda: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGarbage", "damaged"),
        (lambda: "ssh-dss AAAAB3NzaC1kc3MAAACBAP", "DSA"),
        (lambda: _openssh_public(rsa.generate_private_key(public_exponent=65537, key_size=2048)), "2048 bits"),
        (lambda: sshca.generate_user_key(comment="a")[1] + "\n" + sshca.generate_user_key(comment="b")[1], "one line"),
        (lambda: 'from="10.0.0.1" ' + sshca.generate_user_key(comment="a")[1], "options in front"),
        (lambda: sshca.generate_user_key(comment="a")[0], "private key"),
        (lambda: "ssh-ed25519 " + "A" * 9000, "too long"),
        # An ed25519 key presented as RSA: the blob names its own type.
        (lambda: "ssh-rsa " + sshca.generate_user_key(comment="a")[1].split()[1], "damaged or does not match"),
    ],
)
def test_validate_public_key_rejects(make_text, message):
    with pytest.raises(ValueError, match=message):
        sshca.validate_public_key(make_text())


@pytest.mark.filterwarnings("ignore:SSH DSA key support is deprecated")
def test_validate_public_key_rejects_a_real_dsa_key():
    key = dsa.generate_private_key(key_size=1024)

    with pytest.raises(ValueError, match="DSA"):
        sshca.validate_public_key(_openssh_public(key))
