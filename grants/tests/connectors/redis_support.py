"""A throwaway redis-server on a loopback port, for the Redis connector tests.

Its own port, folder and ACL file; nothing saved (`--save ""`, no AOF); the
machine's own Redis (port 6379) is never touched.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devtools import pgcluster

REDIS_SERVER = "/usr/bin/redis-server"


def available() -> bool:
    return shutil.which("redis-server") is not None or Path(REDIS_SERVER).exists()


class RedisServer:
    def __init__(self, base: Path, *, aclfile: bool = True):
        self.base = base
        self.port = pgcluster.free_port()
        self.admin_password = secrets.token_urlsafe(18)
        self.aclfile = base / "users.acl" if aclfile else None
        self.log = base / "redis.log"
        self._proc: subprocess.Popen | None = None

    @property
    def admin_url(self) -> str:
        return f"redis://jitadmin:{self.admin_password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or REDIS_SERVER
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.base),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log),
        ]
        if self.aclfile is not None:
            # The default user is switched off: only named users get in, as the README advises.
            self.aclfile.write_text(
                f"user default off resetpass\nuser jitadmin on >{self.admin_password} ~* &* +@all\n"
            )
            args += ["--aclfile", str(self.aclfile)]
        self._proc = subprocess.Popen(args, cwd=self.base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    "redis-server exited at start:\n" + (self.log.read_text() if self.log.exists() else "")
                )
            try:
                if self.admin().ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start listening")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def admin(self) -> redis.Redis:
        if self.aclfile is None:
            return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=10)
        return redis.Redis.from_url(self.admin_url, decode_responses=True, socket_timeout=10)

    def login(self, username: str, password: str) -> redis.Redis:
        """A client as a grant's user, one connection, no retries (a refused command must surface)."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            username=username,
            password=password,
            decode_responses=True,
            socket_timeout=10,
            single_connection_client=True,
            retry=Retry(NoBackoff(), 0),
        )
