"""A throwaway MariaDB server with performance_schema on, for the activity digest's tests.

The machine's server (127.0.0.1:3306) has performance_schema off and is
shared, so it is left alone: this one has its own data folder under /tmp,
listens on a free loopback port, runs as root (`--user=root`: the tests run
as root, and mariadbd refuses root without it) and is stopped and deleted
after the tests.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql

MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "/usr/bin/mariadb-install-db"


def available() -> bool:
    return Path(MARIADBD).exists() and Path(INSTALL_DB).exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MariaDBServer:
    def __init__(self):
        self.base = Path(tempfile.mkdtemp(prefix="jitportal-mariadb-"))
        self.data = self.base / "data"
        self.port = _free_port()
        self._proc: subprocess.Popen | None = None

    @property
    def root_url(self) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/"

    def start(self) -> MariaDBServer:
        subprocess.run(
            [INSTALL_DB, "--no-defaults", f"--datadir={self.data}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True,
        )  # fmt: skip
        self._proc = subprocess.Popen(
            [MARIADBD, "--no-defaults", f"--datadir={self.data}", "--user=root", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.base / 'sock'}", f"--pid-file={self.base / 'pid'}",
             "--performance-schema=ON", "--skip-log-bin", "--innodb-buffer-pool-size=32M",
             f"--log-error={self.base / 'error.log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError("mariadbd exited at start:\n" + self.log_tail())
            try:
                pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=1).close()
                return self
            except pymysql.MySQLError:
                time.sleep(0.1)
        raise RuntimeError("mariadbd did not start listening:\n" + self.log_tail())

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        shutil.rmtree(self.base, ignore_errors=True)

    def log_tail(self) -> str:
        try:
            return "\n".join((self.base / "error.log").read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""
