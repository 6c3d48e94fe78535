"""A throwaway sshd on a loopback port, configured like a jitportal host, for the SSH connector tests.

It runs as root (sshd must, to switch to the logged-in user) from its own
config file in a temporary folder: the portal's CA in TrustedUserCAKeys, the
connector's KRL as RevokedKeys, and the session guard as ForceCommand. The
guard is installed into the server's folder the way its README tells
operators to (`install -m 0755`), since the logged-in user may not be able
to read the checkout (a clone under a mode-700 home, as /root is), and runs
under the system's python3 by its #! line, as on a host, not under the
portal's virtualenv.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
HOST_PYTHON = "/usr/bin/python3"
# The guard's source in the checkout (contrib/ssh-session-guard/README.md); sshd runs an installed copy.
GUARD = Path(__file__).resolve().parents[3] / "contrib" / "ssh-session-guard" / "jit-session-guard"


def available() -> bool:
    return os.path.exists(SSHD) and shutil.which("ssh") is not None and os.path.exists(HOST_PYTHON)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_user(name: str) -> bool:
    """Create a local account for logins if it is missing; return True if created here."""
    created = False
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
        created = True
    # With UsePAM no, sshd refuses accounts whose password field starts with
    # "!" (locked), which is how useradd leaves them; "*" means "no password".
    with open("/etc/shadow", encoding="utf-8") as fh:
        locked = any(line.startswith(name + ":!") for line in fh)
    if locked:
        subprocess.run(["usermod", "--password", "*", name], check=True)
    return created


def remove_user(name: str) -> None:
    subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)


class SSHServer:
    def __init__(
        self,
        base: Path,
        *,
        ca_public_key: str,
        krl: str,
        principals: dict[str, list[str]],
        user: str,
        guard_args: str = "",
    ):
        self.base = base
        self.ca_public_key = ca_public_key
        self.krl = krl
        self.principals = principals
        self.user = user
        # More options for the guard's ForceCommand line (its session reports, say).
        self.guard_args = guard_args
        self.port = free_port()
        self.config = base / "sshd_config"
        self.log = base / "sshd.log"
        self.guard = base / "bin" / "jit-session-guard"
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        # Privilege separation needs this folder; systemd's tmpfiles creates it on real hosts.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        # Where a host keeps it (/usr/local/bin there): a folder the logged-in user can enter, whatever the umask.
        self.guard.parent.mkdir()
        self.guard.parent.chmod(0o755)
        subprocess.run(["install", "-m", "0755", str(GUARD), str(self.guard)], check=True)
        host_key = self.base / "host_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
        (self.base / "ca.pub").write_text(self.ca_public_key + "\n")
        principals_dir = self.base / "principals"
        principals_dir.mkdir()
        for user, names in self.principals.items():
            (principals_dir / user).write_text("".join(n + "\n" for n in names))
        self.config.write_text(
            f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile none
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile none
TrustedUserCAKeys {self.base / "ca.pub"}
AuthorizedPrincipalsFile {principals_dir}/%u
RevokedKeys {self.krl}
ExposeAuthInfo yes
ForceCommand {self.guard} --krl {self.krl} --interval 0.5 --grace 1 {self.guard_args}
AllowUsers {self.user}
Subsystem sftp /usr/lib/openssh/sftp-server
StrictModes no
MaxStartups 50
LogLevel VERBOSE
"""
        )
        subprocess.run([SSHD, "-t", "-f", str(self.config)], check=True, capture_output=True)
        self._log_fh = open(self.log, "wb")  # noqa: SIM115 (open while sshd runs; closed in stop())
        self._proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config)], stdout=self._log_fh, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError("sshd exited at start:\n" + self.log.read_text())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-2.0"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sshd did not start listening:\n" + self.log.read_text())

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._log_fh.close()
            self._proc = None

    def ssh_args(self, key: Path, cert: Path | None, *extra: str, user: str | None = None) -> list[str]:
        args = ["ssh", "-F", "/dev/null", "-i", str(key)]
        if cert is not None:
            args += ["-o", f"CertificateFile={cert}"]
        args += [
            "-o", "IdentitiesOnly=yes",
            "-o", "IdentityAgent=none",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=5",
            "-o", f"Port={self.port}",
            *extra,
            f"{user or self.user}@127.0.0.1",
        ]  # fmt: skip
        return args

    def run(
        self, key: Path, cert: Path | None, command: str, *, user: str | None = None, timeout: float = 20
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.ssh_args(key, cert, user=user) + [command],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")
