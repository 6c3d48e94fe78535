"""A real OpenID Connect provider for the unit suite: the e2e suite's oidc-provider (tests/e2e/idp), started once.

Why not a stub: refreshing an identity is about what a real provider
answers (refresh tokens issued for offline_access, rotated, refused with
invalid_grant once the account is disabled), and the e2e suite already has
one that runs on loopback in about a second. Its accounts file is ours, and
it reads it again when it changes, so a test can disable an account or
change its groups "at the IdP" without anyone signing in.

Loaded as a pytest plugin by the root conftest: fixtures `oidc_provider`
(the process, per session) and `idp` (per test: the portal's settings point
at it, the accounts are reset, `idp.sign_in(client, username)` signs in
through allauth exactly as a browser would).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from django.contrib.auth import get_user_model

IDP_DIR = Path(__file__).resolve().parents[2] / "tests" / "e2e" / "idp"
CLIENT_ID, CLIENT_SECRET = "jitportal-unit", "unit-client-secret-not-secret-0123456789"
CALLBACK = "http://testserver/accounts/oidc/idp/login/callback/"
PASSWORD = "idp-pass-123"

# Subjects are the usernames; managers are named by subject (OIDC_MANAGER_MATCH=sub).
ACCOUNTS = {
    "ana": {"email": "ana@example.com", "given_name": "Ana", "groups": ["engineers"], "manager": "marc"},
    "marc": {"email": "marc@example.com", "given_name": "Marc", "groups": ["engineers", "db-approvers"]},
    "otto": {"email": "otto@example.com", "given_name": "Otto", "groups": ["db-approvers"]},
}


class Idp:
    def __init__(self, issuer: str, accounts_file: Path):
        self.issuer, self.accounts_file = issuer, accounts_file
        self.accounts: dict = {}
        self._mtime = time.time()

    def reset(self):
        self.accounts = copy.deepcopy(ACCOUNTS)
        self._write()

    def set(self, username: str, **fields):
        """Change an account at the IdP (groups, disabled, email, ...); the provider sees it at its next request."""
        self.accounts.setdefault(username, {}).update(fields)
        self._write()

    def _write(self):
        for account in self.accounts.values():
            account.setdefault("password", PASSWORD)
        self.accounts_file.write_text(json.dumps(self.accounts))
        # The provider re-reads the file when its mtime changes; two writes within
        # the clock's resolution must still look different.
        self._mtime = max(self._mtime + 1, time.time())
        os.utime(self.accounts_file, (self._mtime, self._mtime))

    def sign_in(self, client, username: str):
        """Sign `username` in to the portal through the IdP (the
        authorization code flow, driven by hand); return the user."""
        start = client.post("/accounts/oidc/idp/login/")
        done = self.authorize(client, start, username)
        assert done.status_code == 302, done.content[:500]
        return get_user_model().objects.get(username=username)

    def authorize(self, client, start, username: str, *, otp: str = "", browser=None):
        """Follow the portal's redirect `start` to the IdP, sign in there as `username` if it asks
        (with the one-time code `otp`), and return the portal's answer at its callback."""
        assert start.status_code == 302 and start["Location"].startswith(self.issuer), start
        self.last_authorize_url = start["Location"]
        browser = browser or requests.Session()
        response = browser.get(start["Location"], allow_redirects=False, timeout=10)
        location, self.prompted = None, False
        for _ in range(10):
            if response.status_code not in (302, 303):
                break
            location = urljoin(response.url, response.headers["Location"])
            if location.startswith(CALLBACK):
                break
            response = browser.get(location, allow_redirects=False, timeout=10)
        if not (location or "").startswith(CALLBACK):
            assert 'for="username"' in response.text, response.text[:300]
            self.prompted = True
            uid = urlsplit(response.url).path.rstrip("/").split("/")[-1]
            response = browser.post(
                urljoin(response.url, f"/interaction/{uid}/login"),
                data={"username": username, "password": PASSWORD, "otp": otp},
                allow_redirects=False,
                timeout=10,
            )
            for _ in range(10):
                assert response.status_code in (302, 303), response.text[:300]
                location = urljoin(response.url, response.headers["Location"])
                if location.startswith(CALLBACK):
                    break
                response = browser.get(location, allow_redirects=False, timeout=10)
        parts = urlsplit(location)
        return client.get(f"{parts.path}?{parts.query}")


@pytest.fixture(scope="session")
def oidc_provider():
    node = shutil.which("node")
    if not node:
        pytest.fail(
            "node is missing: the identity tests run tests/e2e/idp (oidc-provider) with Node.js (make e2e-deps)."
        )
    if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
        npm = shutil.which("npm") or pytest.fail("npm is missing: cannot install the test IdP's packages.")
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=IDP_DIR, check=True, capture_output=True, timeout=300
        )
    workdir = Path(tempfile.mkdtemp(prefix="jitportal-idp-"))
    accounts_file, log_file = workdir / "accounts.json", workdir / "idp.log"
    accounts_file.write_text(json.dumps({}))
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [
                node,
                "server.mjs",
                "--port",
                "0",
                "--client-id",
                CLIENT_ID,
                "--client-secret",
                CLIENT_SECRET,
                "--redirect-uri",
                CALLBACK,
                "--accounts",
                str(accounts_file),
            ],
            cwd=IDP_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
    try:
        deadline, issuer = time.monotonic() + 30, None
        while issuer is None:
            match = re.search(r"IdP ready on (http://\S+)", log_file.read_text(errors="replace"))
            issuer = match and match.group(1)
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the test IdP did not start:\n{log_file.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        yield Idp(issuer, accounts_file)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def idp(oidc_provider, settings, db):
    """The portal configured for the test IdP, whose accounts are ACCOUNTS again."""
    oidc_provider.reset()
    settings.OIDC_ISSUER = oidc_provider.issuer
    settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET = CLIENT_ID, CLIENT_SECRET
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "OAUTH_PKCE_ENABLED": True,
            "SCOPE": ["openid", "profile", "email", "groups", "offline_access"],
            "APPS": [
                {
                    "provider_id": settings.OIDC_PROVIDER_ID,
                    "name": "Test IdP",
                    "client_id": CLIENT_ID,
                    "secret": CLIENT_SECRET,
                    "settings": {
                        "server_url": oidc_provider.issuer,
                        "oauth_pkce_enabled": True,
                        "fetch_userinfo": True,
                    },
                }
            ],
        }
    }
    return oidc_provider
