"""The session guard on its own: its certificate parser and the sessions it refuses before anything runs.

It runs as a host runs it, under the system's python3 (standard library only), not the portal's
virtualenv. The certificates come from the portal's own signer (grants/connectors/ssh/ca.py): what the guard must read
is what the portal issues. The sessions it ends, behind a real sshd, are tested with the SSH connector
(grants/tests/connectors/test_ssh.py, "open sessions and the guard").
"""

import importlib.machinery
import importlib.util
import os
import subprocess
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from grants.connectors.ssh import ca as sshca

GUARD = Path(__file__).resolve().parents[1] / "jit-session-guard"
HOST_PYTHON = "/usr/bin/python3"


def _load_guard():
    loader = importlib.machinery.SourceFileLoader("jit_session_guard", str(GUARD))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_guard_reads_serial_expiry_and_force_command_from_each_key_type_the_portal_signs():
    guard = _load_guard()
    ca_key = ed25519.Ed25519PrivateKey.generate()
    keys = [
        ed25519.Ed25519PrivateKey.generate(),
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP521R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=3072),
    ]
    for i, key in enumerate(keys, start=7):
        line = sshca.sign_user_certificate(
            ca_key,
            sshca.public_key_line(key),
            serial=2**40 + i,
            key_id=f"jitportal-grant-{i}",
            principals=["ops"],
            valid_after=1_000,
            valid_before=2_000_000_000 + i,
            options={"force-command": "uptime", "source-address": "10.0.0.0/8"},
        )
        key_type, blob = line.split()[:2]

        cert = guard.parse_certificate(key_type, blob)

        assert (cert.serial, cert.valid_before, cert.key_id) == (2**40 + i, 2_000_000_000 + i, f"jitportal-grant-{i}")
        assert cert.options == {"force-command": "uptime", "source-address": "10.0.0.0/8"}


def _run_guard(tmp_path, auth_info: str | None, command: str, *extra: str):
    env = {"PATH": os.environ["PATH"], "SSH_ORIGINAL_COMMAND": command}
    if auth_info is not None:
        path = tmp_path / "auth-info"
        path.write_text(auth_info)
        env["SSH_USER_AUTH"] = str(path)
    return subprocess.run(
        [HOST_PYTHON, str(GUARD), "--krl", str(tmp_path / "missing.krl"), *extra],
        env=env, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_guard_refuses_when_sshd_does_not_expose_auth_info(tmp_path):
    done = _run_guard(tmp_path, None, "echo should-not-run")

    assert done.returncode == 1
    assert "ExposeAuthInfo yes" in done.stderr and "should-not-run" not in done.stdout


def test_guard_runs_a_session_without_certificate_unguarded_unless_told_to_refuse(tmp_path):
    _, public = sshca.generate_user_key(comment="admin")
    auth_info = f"publickey {public}\n"

    plain = _run_guard(tmp_path, auth_info, "echo plain")
    strict = _run_guard(tmp_path, auth_info, "echo plain", "--require-certificate")

    assert (plain.returncode, plain.stdout.strip()) == (0, "plain")
    assert strict.returncode == 1 and "only jitportal certificates" in strict.stderr and not strict.stdout


def test_guard_refuses_a_new_session_of_an_expired_certificate(tmp_path):
    # A multiplexed connection (ControlMaster) opens sessions without a new
    # authentication, so sshd never rechecks the certificate.
    ca = ed25519.Ed25519PrivateKey.generate()
    _, public = sshca.generate_user_key(comment="ana")
    cert = sshca.sign_user_certificate(
        ca, public, serial=5, key_id="k", principals=["ops"], valid_after=0, valid_before=int(time.time()) - 1
    )

    done = _run_guard(tmp_path, f"publickey {cert}\n", "echo should-not-run")

    assert done.returncode == 1
    assert "access ended (expired)" in done.stderr and "should-not-run" not in done.stdout
