"""moto's AWS server as a child process on loopback, for connector tests.

A separate process rather than moto's in-process server: importing moto
patches botocore's handlers in the importing process, and the connector must
be tested over HTTP exactly as it talks to AWS, with nothing in between.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from devtools import pgcluster


class MotoServerError(RuntimeError):
    pass


class MotoServer:
    """Start, reset and stop one `moto_server` bound to 127.0.0.1 on a free port."""

    def __init__(self, *, start_timeout: float = 30.0):
        self.port = pgcluster.free_port()
        self.start_timeout = start_timeout
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        script = Path(sys.executable).with_name("moto_server")
        if script.exists():
            return [str(script)]
        found = shutil.which("moto_server")
        if found:
            return [found]
        return [sys.executable, "-m", "moto.server"]

    def start(self) -> None:
        env = {**os.environ, "MOTO_PORT": str(self.port)}
        self._process = subprocess.Popen(
            [*self._command(), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise MotoServerError(
                    f"moto_server exited with code {self._process.returncode}; is moto[server] installed?"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise MotoServerError(f"moto_server did not listen on 127.0.0.1:{self.port} within {self.start_timeout:.0f} s")

    def reset(self) -> None:
        """Forget every IAM/STS object, as if the server had just started."""
        request = urllib.request.Request(self.url + "/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
