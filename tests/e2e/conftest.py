"""End-to-end fixtures: a real OpenID Connect provider, the whole portal, a PostgreSQL target, chromium.

Package-scoped: started once, stopped after the last e2e test:

- `idp`: tests/e2e/idp/server.mjs (oidc-provider) on a free loopback port,
  with one confidential client for the portal and the accounts of
  idp/accounts.json;
- `e2e_target`: a throwaway PostgreSQL cluster (devtools.pgcluster) with the
  demo roles, the target the portal hands out access to;
- `portal`: a fresh portal database (E2E_POSTGRES_URL's server, database
  jitportal_e2e), migrated and loaded with tests/e2e/catalog.py, then
  `runserver`, `qcluster` and `expiry_timer` running against it;
- `browser`: Debian's chromium driven by Playwright (never downloaded).

`people` (per test module) gives each user their own browser context,
signed in through the IdP on first use. Process logs and screenshots go
to test-artifacts/e2e/; on failure the tests' pages are screenshotted and
the tails of the logs are added to the report.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from playwright.sync_api import sync_playwright
from psycopg import sql

from devtools import pgcluster

from .harness import (
    _OPEN_PAGES,
    _SERVICES,
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    CLIENT_ID,
    CLIENT_SECRET,
    E2E_DIR,
    E2E_POSTGRES_URL,
    IDP_DIR,
    PORTAL_DB_NAME,
    Idp,
    People,
    Portal,
    Service,
    free_port,
    run_step,
    screenshot,
    service_tails,
)


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: end-to-end browser tests (real IdP, portal processes, chromium)")


# -- the stack ----------------------------------------------------------------


@pytest.fixture(scope="package")
def artifacts() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture(scope="package")
def portal_port() -> int:
    return free_port()


@pytest.fixture(scope="package")
def idp(artifacts, portal_port):
    """The OpenID Connect provider (node + oidc-provider), registered with the portal's redirect URIs."""
    node = shutil.which("node")
    if not node:
        pytest.fail(
            "node is missing: the e2e suite runs its IdP with Node.js (see the Makefile's e2e-deps).", pytrace=False
        )
    if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
        npm = shutil.which("npm") or pytest.fail("npm is missing: cannot install the IdP's packages.", pytrace=False)
        run_step("idp-npm-ci", [npm, "ci", "--no-audit", "--no-fund"], env=dict(os.environ), cwd=IDP_DIR)
    portal = f"http://127.0.0.1:{portal_port}"
    service = Service(
        "idp",
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
            f"{portal}/accounts/oidc/idp/login/callback/",
            "--post-logout-redirect-uri",
            f"{portal}/accounts/login/",
        ],
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
        cwd=IDP_DIR,
    ).start()
    try:
        issuer = service.wait_for_output(r"IdP ready on (http://\S+)").group(1)
        service.wait_for_http(issuer + "/.well-known/openid-configuration")
        yield Idp(issuer=issuer, service=service)
    finally:
        service.stop()


@pytest.fixture(scope="package")
def e2e_target():
    """A throwaway PostgreSQL cluster with appdb and the app_* group roles."""
    if not pgcluster.available():
        pytest.fail(
            "PostgreSQL server programs are missing under /usr/lib/postgresql: `make system-deps` installs them.",
            pytrace=False,
        )
    # Not under /tmp/pytest-of-root (0700): the server runs as the postgres OS user.
    base_dir = Path(tempfile.mkdtemp(prefix="jitportal-e2e-pg-"))
    cluster = pgcluster.DevCluster(base_dir)
    try:
        cluster.start()
        cluster.setup_demo_roles()
        yield cluster
    finally:
        cluster.destroy()  # its files too, wherever they went


def _with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


@pytest.fixture(scope="package")
def portal_database_url():
    """Drop and create the portal's database; yield its URL; drop it at the end (the server is the machine's)."""
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(PORTAL_DB_NAME))
    try:
        with psycopg.connect(E2E_POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(drop)
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(PORTAL_DB_NAME)))
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"Cannot reach the portal's PostgreSQL at {E2E_POSTGRES_URL} (E2E_POSTGRES_URL): {exc}", pytrace=False
        )
    yield _with_dbname(E2E_POSTGRES_URL, PORTAL_DB_NAME)
    with psycopg.connect(E2E_POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(drop)


@pytest.fixture(scope="package")
def portal(artifacts, portal_port, idp, e2e_target, portal_database_url):
    """The portal on a fresh database: web server, two workers, the expiry timer."""
    url = f"http://127.0.0.1:{portal_port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OIDC_", "JIT_", "JITPORTAL_", "Q_"))},
        "DJANGO_SETTINGS_MODULE": "jitportal.settings",
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": portal_database_url,
        "SECRET_KEY": "e2e-secret-key-not-secret-0123456789abcdefghijklmnopqrstuvwxyz",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PORTAL_URL": url,
        "OIDC_ISSUER": idp.issuer,
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "OIDC_SCOPES": "openid,profile,email,groups",
        "OIDC_GROUPS_CLAIM": "groups",
        "OIDC_MANAGER_CLAIM": "manager",
        "SESSION_COOKIE_SECURE": "false",
        "Q_WORKERS": "2",
        "JIT_E2E_PG_DSN": e2e_target.admin_dsn,
        # Step-up on the high-risk profile (test_step_up.py): the IdP asks again every time, and only
        # a sign-in with the one-time code (the IdP's acr for it) counts.
        "STEP_UP_MAX_AGE": "0",
        "STEP_UP_ACR_VALUES": "urn:jitportal:idp:mfa",
        "LOG_LEVEL": "INFO",
    }
    python = sys.executable
    run_step("migrate", [python, "manage.py", "migrate", "--noinput"], env=env)
    run_step(
        "catalog",
        [python, str(E2E_DIR / "catalog.py"), "--pg-host", e2e_target.host, "--pg-port", str(e2e_target.port)],
        env=env,
    )

    services = [
        Service(
            "web", [python, "manage.py", "runserver", f"127.0.0.1:{portal_port}", "--noreload", "--insecure"], env=env
        ),
        Service("qcluster", [python, "manage.py", "qcluster"], env=env),
        Service("expiry_timer", [python, "manage.py", "expiry_timer"], env=env),
    ]
    try:
        for service in services:
            service.start()
        services[0].wait_for_http(url + "/accounts/login/")
        services[1].wait_for_output(r"(?i)Q Cluster \S+ running|running\.")
        services[2].wait_for_output(r"expiry timer running")
        yield Portal(url=url, env=env, database_url=portal_database_url, target=e2e_target, services=services)
    finally:
        for service in reversed(services):
            service.stop()


# -- the browser --------------------------------------------------------------


@pytest.fixture(scope="package")
def browser(artifacts):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium (E2E_CHROMIUM names another).",
            pytrace=False,
        )

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def people(browser, portal):
    crowd = People(browser, portal)
    yield crowd
    crowd.close()


@pytest.fixture
def fresh_people(browser, portal):
    """Like `people`, for one test only."""
    crowd = People(browser, portal)
    yield crowd
    crowd.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed or E2E_DIR not in Path(str(item.fspath)).parents:
        return
    shots = []
    for label, page in list(_OPEN_PAGES.items()):
        try:
            shots.append(str(screenshot(page, f"FAILED-{item.name}-{report.when}-{label}")))
        except Exception as exc:  # noqa: BLE001 (a closed page, a crashed browser)
            shots.append(f"{label}: no screenshot ({exc})")
    if shots:
        report.sections.append(("e2e screenshots", "\n".join(shots)))
    if _SERVICES:
        report.sections.append(("e2e service logs (tails)", service_tails()))
