"""The e2e harness: background processes, screenshots, signing in through the IdP, one browser context per user.

Used by conftest.py (the fixtures) and the tests. Everything a run leaves
behind (process logs, screenshots) is in test-artifacts/e2e/.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import requests
from playwright.sync_api import expect

from devtools.pgcluster import free_port as _free_port

ROOT = Path(__file__).resolve().parents[2]
E2E_DIR = Path(__file__).resolve().parent
IDP_DIR = E2E_DIR / "idp"
ARTIFACTS = ROOT / "test-artifacts" / "e2e"

CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # we run as root
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]
# The server that holds the portal's own database (not the target).
# E2E_POSTGRES_URL, else the server of a PostgreSQL DATABASE_URL (as `make test` sets), else the local one.
_DATABASE_URL = os.environ.get("DATABASE_URL", "")
E2E_POSTGRES_URL = os.environ.get("E2E_POSTGRES_URL") or (
    urlunsplit(urlsplit(_DATABASE_URL)._replace(path="/postgres"))
    if _DATABASE_URL.startswith(("postgres://", "postgresql://"))
    else "postgres://postgres@127.0.0.1:5432/postgres"
)
PORTAL_DB_NAME = os.environ.get("E2E_PORTAL_DB", "jitportal_e2e")

CLIENT_ID = "jitportal-e2e"
CLIENT_SECRET = "e2e-client-secret-not-secret-0123456789"
PROVIDER_NAME = "Single sign-on"  # OIDC_PROVIDER_NAME's default
PASSWORDS = {
    "ana": "ana-e2e-pass",
    "marc": "marc-e2e-pass",
    "audra": "audra-e2e-pass",
    "eve": "eve-e2e-pass",
    "dora": "dora-e2e-pass",
}

SERVICE_START_TIMEOUT = 60
DEFAULT_UI_TIMEOUT_MS = 15_000


# -- processes ----------------------------------------------------------------

_SERVICES: list[Service] = []


class Service:
    """A background process we start, with its output in test-artifacts/e2e/<name>.log."""

    def __init__(self, name: str, argv: list[str], *, env: dict | None = None, cwd: Path = ROOT):
        self.name, self.argv, self.env, self.cwd = name, argv, env, cwd
        self.log_path = ARTIFACTS / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Service:
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child process writes it while it runs; closed when it has stopped)
        # Its own session (process group): qcluster forks workers, and
        # stop() signals the whole group it leads, nothing else.
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        _SERVICES.append(self)
        return self

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def check_alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def wait_for_output(self, pattern: str, timeout: float = SERVICE_START_TIMEOUT) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output())
            if match:
                return match
            self.check_alive()
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: no {pattern!r} in its output after {timeout:.0f} s:\n{self.tail()}")

    def wait_for_http(self, url: str, timeout: float = SERVICE_START_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                response = requests.get(url, timeout=2, allow_redirects=False)
                if response.status_code < 500:
                    return response
                last = f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                last = exc
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: {url} not answering after {timeout:.0f} s ({last}):\n{self.tail()}")

    def stop(self, grace: float = 10):
        if self.proc is None or self.proc.poll() is not None:
            return
        started, how = time.monotonic(), "SIGTERM"
        # The leader only: qcluster stops its own workers in order (a
        # SIGTERM to every worker at once leaves it waiting for them).
        self.proc.terminate()
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            how = "SIGKILL"
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)
        # Children that outlived their parent (same process group, which we lead).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        with open(self.log_path, "a") as log:
            log.write(
                f"\n[e2e: {self.name} stopped by {how} after {time.monotonic() - started:.1f} s, exit "
                f"{self.proc.returncode}]\n"
            )


def service_tails(lines: int = 30) -> str:
    return "\n\n".join(f"----- {s.name} ({s.log_path}) -----\n{s.tail(lines)}" for s in _SERVICES)


def run_step(name: str, argv: list[str], *, env: dict, cwd: Path = ROOT, timeout: float = 180) -> str:
    """Run a setup command to completion, its output in test-artifacts/e2e/<name>.log; fail with its tail."""
    log_path = ARTIFACTS / f"{name}.log"
    started = time.monotonic()
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    log_path.write_text(
        f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}\n[{name}: exit {result.returncode} after "
        f"{time.monotonic() - started:.1f} s]\n"
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        pytest.fail(f"{name} failed ({result.returncode}), see {log_path}:\n{tail}", pytrace=False)
    return result.stdout


def free_port() -> int:
    return _free_port()


# -- screenshots --------------------------------------------------------------

_shot_counter = itertools.count(1)
_taken: dict[str, Path] = {}


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot as test-artifacts/e2e/NN-name.png."""
    path = ARTIFACTS / f"{next(_shot_counter):02d}-{re.sub(r'[^a-zA-Z0-9_.-]+', '-', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@dataclass
class Idp:
    issuer: str
    service: Service

    @property
    def discovery_url(self) -> str:
        return self.issuer + "/.well-known/openid-configuration"


@dataclass
class Portal:
    url: str
    env: dict
    database_url: str
    target: object
    services: list = field(default_factory=list)

    def db(self):
        """A psycopg connection to the portal's database (for assertions only)."""
        return psycopg.connect(self.database_url, autocommit=True)


# Pages open right now, by label: screenshotted when a test fails.
_OPEN_PAGES: dict[str, object] = {}


def sign_in(page, portal_url: str, username: str, password: str | None = None, *, expect_success: bool = True):
    """Sign in through the IdP starting from the portal's login page; return the page."""
    page.goto(portal_url + "/accounts/login/")
    page.get_by_role("link", name=PROVIDER_NAME).or_(page.get_by_role("button", name=PROVIDER_NAME)).first.click()
    # allauth asks for a POST before leaving for the provider (SOCIALACCOUNT_LOGIN_ON_GET off).
    username_field = page.get_by_label("Username")
    continue_button = page.get_by_role("button", name="Continue")
    expect(username_field.or_(continue_button).first).to_be_visible()
    if continue_button.count() and continue_button.is_visible():
        continue_button.click()
    expect(username_field).to_be_visible()
    if not _taken.get("idp-login"):
        _taken["idp-login"] = screenshot(page, "idp-login")
    username_field.fill(username)
    page.get_by_label("Password").fill(password if password is not None else PASSWORDS[username])
    page.get_by_role("button", name="Sign in").click()
    if expect_success:
        page.wait_for_url(re.compile("^" + re.escape(portal_url) + r"/access/"))
    return page


class People:
    """One browser context per user, signed in through the IdP the first time it is asked for."""

    def __init__(self, browser, portal: Portal):
        self.browser, self.portal = browser, portal
        self.contexts: dict[str, object] = {}
        self.pages: dict[str, object] = {}

    def context(self, username: str):
        if username not in self.contexts:
            context = self.browser.new_context(base_url=self.portal.url, viewport={"width": 1280, "height": 900})
            context.set_default_timeout(DEFAULT_UI_TIMEOUT_MS)
            self.contexts[username] = context
        return self.contexts[username]

    def page(self, username: str, *, signed_in: bool = True):
        """Return `username`'s page, signing in through the IdP on first use."""
        if username not in self.pages:
            page = self.context(username).new_page()
            self.pages[username] = page
            _OPEN_PAGES[username] = page
            if signed_in:
                sign_in(page, self.portal.url, username)
        return self.pages[username]

    def close(self):
        for username, context in self.contexts.items():
            _OPEN_PAGES.pop(username, None)
            context.close()
        self.contexts.clear()
        self.pages.clear()
