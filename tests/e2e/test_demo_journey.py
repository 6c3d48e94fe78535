"""The journey on `make run`'s own configuration: the embedded default, in a real browser.

The portal is started exactly as `make run` starts it (`python -m
jitportal.run`: demo mode, SQLite, the django-q2 ORM broker on it, gunicorn,
the workers, the expiry timer and the throwaway target cluster), in a folder
of its own (JITPORTAL_VAR_DIR) so that the checkout's demo is left alone.
People sign in with the demo passwords the runner prints. The tests run in
file order and build on each other, like test_journey.py: request, approve,
credentials, expiry on its own, release, and the auditor's CSV holding the
rows the page showed.
"""

import csv
import io
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import expect

from .harness import DEFAULT_UI_TIMEOUT_MS, ROOT, Portal, Service, free_port, screenshot
from .test_journey import created_request_id, inbox_card, nav, submit_request, wait_until

pytestmark = pytest.mark.e2e

DEMO_PASSWORDS = {
    "ana": "ana-demo-pass",
    "marc": "marc-demo-pass",
    "audra": "audra-demo-pass",
}  # load_demo's DEMO_USERS
TIMEOUT_S = 60
# The expiry step asks for one minute: its session may end only that long after the credentials are shown.
EXPIRY_DURATION, EXPIRY_S = "1m", 60
JUSTIFICATION = "INC-5150: compare the order totals on appdb with the invoices, read only."


@pytest.fixture(scope="module")
def demo(artifacts):
    """`make run`, in a temporary folder, on a free port; stopped (with its cluster) at the end."""
    folder = Path(tempfile.mkdtemp(prefix="jitportal-demo-e2e-"))
    folder.chmod(0o755)  # the runner's target cluster runs as the postgres OS user, in demo-pg under it
    port = free_port()
    # Nothing of the suite's configuration: the runner chooses everything itself, as for a new user.
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "OIDC_", "JIT_", "E2E_", "DEBUG", "LOG_"))
    }
    env.update({"JITPORTAL_VAR_DIR": str(folder), "JITPORTAL_PORT": str(port)})
    service = Service("demo-make-run", [sys.executable, "-m", "jitportal.run"], env=env, cwd=ROOT).start()
    try:
        service.wait_for_output(r"jitportal demo is starting", timeout=180)
        url = f"http://127.0.0.1:{port}"
        service.wait_for_http(url + "/accounts/login/")
        yield Portal(
            url=url, env=env, database_url=f"sqlite:///{folder / 'db.sqlite3'}", target=None, services=[service]
        )
    finally:
        service.stop(grace=60)  # the runner stops gunicorn, the workers, the timer and the cluster itself
        shutil.rmtree(folder, ignore_errors=True)


class DemoPeople:
    """One browser context per demo user, signed in with the local demo password the first time."""

    def __init__(self, browser, portal):
        self.browser, self.portal, self.pages = browser, portal, {}

    def page(self, username):
        if username not in self.pages:
            context = self.browser.new_context(
                base_url=self.portal.url, viewport={"width": 1280, "height": 900}, accept_downloads=True
            )
            context.set_default_timeout(DEFAULT_UI_TIMEOUT_MS)
            page = context.new_page()
            page.goto(self.portal.url + "/accounts/login/")
            expect(page.get_by_text("demo mode", exact=False).first).to_be_visible()
            page.get_by_label("Username").fill(username)
            page.get_by_label("Password").fill(DEMO_PASSWORDS[username])
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(re.compile("^" + re.escape(self.portal.url) + r"/access/"))
            self.pages[username] = page
        return self.pages[username]

    def close(self):
        for page in self.pages.values():
            page.context.close()


@pytest.fixture(scope="module")
def demo_people(browser, demo):
    crowd = DemoPeople(browser, demo)
    yield crowd
    crowd.close()


@pytest.fixture(scope="module")
def journey():
    state = {}
    yield state
    for conn in state.pop("connections", []):
        conn.close()


def reload_until(page, check, message):
    """Reload `page` until `check()` holds: the workers change what it shows after the request that loaded it."""

    def reloaded():
        if check():
            return True
        page.reload()
        return False

    wait_until(reloaded, TIMEOUT_S, message=message)


def request_and_approve(people, duration):
    """Ana asks for appdb read-only, Marc approves it from his inbox; return the request's number."""
    ana = people.page("ana")
    submit_request(ana, duration=duration, justification=JUSTIFICATION, ticket="INC-5150")
    ana.get_by_role("button", name="Request access").click()
    request_id = created_request_id(ana)
    marc = people.page("marc")
    card = inbox_card(marc, request_id)
    expect(card).to_contain_text(JUSTIFICATION)
    card.get_by_role("button", name="Approve").click()
    expect(marc.get_by_role("status")).to_contain_text(f"Request #{request_id} approved.")
    return request_id


def reveal_credentials(people, journey):
    """Ana shows her credentials once and connects; return (grant page URL, DSN, open session)."""
    ana = people.page("ana")
    nav(ana, "My access")
    show = ana.get_by_role("button", name="Show credentials")
    reload_until(ana, show.is_visible, "Show credentials appears")
    grant_url = (
        ana.get_by_role("article", name=re.compile("appdb read-only"))
        .get_by_role("link", name="Details")
        .get_attribute("href")
    )
    show.click()
    expect(ana.get_by_role("alert")).to_contain_text("Shown once")
    dsn = ana.get_by_role("definition").filter(has_text=re.compile(r"^\s*postgresql://")).inner_text().strip()
    session = psycopg.connect(dsn, connect_timeout=5, autocommit=True)
    journey.setdefault("connections", []).append(session)
    assert session.execute("SELECT current_user").fetchone()[0].startswith("jit_")
    return grant_url, dsn, session


def assert_gone(people, grant_url, dsn, session, how, *, after=0):
    """The target ended the open session and refuses the login; the grant page says it is confirmed gone, and how.

    `after`: seconds the grant may still run; the budget for ending it comes on top.
    """

    def session_ended():
        try:
            session.execute("SELECT 1")
        except psycopg.OperationalError:
            return True
        return False

    def login_refused():
        try:
            psycopg.connect(dsn, connect_timeout=5).close()
        except psycopg.OperationalError:
            return True
        return False

    wait_until(session_ended, after + TIMEOUT_S, message="the open session is ended")
    wait_until(login_refused, TIMEOUT_S, message="a new login is refused")
    ana = people.page("ana")
    ana.goto(grant_url)
    reload_until(
        ana,
        lambda: "Confirmed gone" in ana.get_by_role("term").all_inner_texts(),
        "the grant page shows 'Confirmed gone'",
    )
    expect(ana.locator("main")).to_contain_text(how)
    return int(re.search(r"/(\d+)/$", grant_url).group(1))


def test_on_the_demo_a_grant_ends_at_its_expiry_by_itself(demo_people, journey):
    request_and_approve(demo_people, EXPIRY_DURATION)
    grant_url, dsn, session = reveal_credentials(demo_people, journey)
    journey["expired"] = assert_gone(demo_people, grant_url, dsn, session, "Expired", after=EXPIRY_S)
    screenshot(demo_people.page("ana"), "demo-expired")


def test_on_the_demo_a_released_grant_is_removed_from_the_target(demo_people, journey):
    if "expired" not in journey:
        pytest.skip("the expiry step did not finish")
    request_and_approve(demo_people, "1h")
    grant_url, dsn, session = reveal_credentials(demo_people, journey)
    ana = demo_people.page("ana")
    nav(ana, "My access")
    ana.get_by_role("article", name=re.compile("appdb read-only")).get_by_role("button", name="Release now").click()
    expect(ana.get_by_role("status")).to_contain_text("Releasing appdb read-only")
    journey["released"] = assert_gone(demo_people, grant_url, dsn, session, "Released")


def test_on_the_demo_the_auditor_downloads_the_rows_the_access_history_shows(demo_people, journey):
    if "released" not in journey:
        pytest.skip("the release step did not finish")
    audra = demo_people.page("audra")
    audra.goto("/audit/access/")
    expect(audra.get_by_role("heading", level=1)).to_contain_text("Access history")
    table = audra.get_by_role("table")
    shown = {
        int(cells[0].lstrip("#")): cells
        for cells in (
            [c.strip() for c in row.get_by_role("cell").all_inner_texts()] for row in table.locator("tbody tr").all()
        )
    }
    assert set(shown) == {journey["expired"], journey["released"]}, shown
    screenshot(audra, "demo-access-history")
    with audra.expect_download() as download:
        audra.get_by_role("link", name="Download CSV").click()
    body = Path(download.value.path()).read_text(encoding="utf-8")
    rows = {int(r["grant_id"]): r for r in csv.DictReader(io.StringIO(body))}
    # The regression this guards: on SQLite with DEBUG the file held the header line only.
    assert set(rows) == set(shown)
    for grant_id, row in rows.items():
        assert row["user"] == "ana" and row["profile"] == "appdb-readonly" and row["status"] == "revoked"
        assert row["justification"] == JUSTIFICATION and row["user"] in shown[grant_id][1]
    assert rows[journey["expired"]]["end_reason"] == "expired"
    assert rows[journey["released"]]["end_reason"] == "released"
