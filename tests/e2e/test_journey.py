"""The whole journey in a real browser: sign in at the IdP, request, approve, use, release, deny, audit.

The tests run in file order and build on each other (pytest -x stops at
the first failure); `journey` carries what one step leaves for the next.
Every user has their own browser context (`people`), signed in through the
IdP's login page the first time. Pages are found by what a person sees:
labels, roles and names, never CSS ids.
"""

import re
import time

import psycopg
import pytest
from playwright.sync_api import expect

from .harness import screenshot, sign_in

pytestmark = pytest.mark.e2e

PROFILE = "appdb read-only"
REVOCATION_TIMEOUT_S = 30

EXPECTED_TRAIL = [
    "request.submitted",
    "request.approved",
    "grant.provisioned",
    "grant.revoked",
    "request.denied",
    "request.decision_refused",
]


@pytest.fixture(scope="module")
def journey():
    state = {}
    yield state
    for conn in state.pop("connections", []):
        conn.close()


def need(journey, *keys):
    missing = [k for k in keys if k not in journey]
    if missing:
        pytest.skip(f"an earlier step did not finish ({', '.join(missing)} missing)")
    return [journey[k] for k in keys]


def nav(page, name):
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name).click()
    expect(page.get_by_role("heading", level=1, name=name)).to_be_visible()


def submit_request(page, *, duration, justification, ticket=""):
    nav(page, "Request access")
    page.get_by_label("Access profile").select_option(label=PROFILE)
    page.get_by_label("Duration").fill(duration)
    page.get_by_label("Justification").fill(justification)
    page.get_by_label("Ticket").fill(ticket)
    return page


def created_request_id(page) -> int:
    page.wait_for_url(re.compile(r"/access/requests/\d+/$"))
    request_id = int(re.search(r"/access/requests/(\d+)/$", page.url).group(1))
    expect(page.get_by_role("status")).to_contain_text(f"Request #{request_id} sent to its approvers.")
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"Request #{request_id}: {PROFILE}")
    return request_id


def inbox_card(page, request_id):
    nav(page, "Approval inbox")
    card = page.get_by_role("article", name=re.compile(rf"^#{request_id}: "))
    expect(card).to_be_visible()
    return card


def post_form(page, base, path, form):
    """POST a form from this user's browser context, as the page's own form would (CSRF token included)."""
    context = page.context
    token = next((c["value"] for c in context.cookies() if c["name"] == "csrftoken"), None)
    assert token, "no csrftoken cookie in this context"
    return context.request.post(
        base + path,
        form={"csrfmiddlewaretoken": token, **form},
        headers={"X-CSRFToken": token, "Referer": base + "/access/"},
        max_redirects=0,
    )


def wait_until(check, timeout, interval=0.5, message="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 (reported below)
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{message} not met within {timeout} s" + (f" (last error: {last!r})" if last else ""))


# -- 1 ------------------------------------------------------------------------


def test_ana_signs_in_at_the_idp_and_requests_access(people, journey):
    ana = people.page("ana")
    expect(ana.get_by_role("heading", level=1, name="My access")).to_be_visible()
    expect(ana.get_by_role("banner")).to_contain_text("Ana Requester (ana)")

    submit_request(
        ana,
        duration="1h",
        justification="INC-4711: order totals look wrong; I need to read the orders table on appdb to compare.",
        ticket="INC-4711",
    )
    screenshot(ana, "request-form")
    ana.get_by_role("button", name="Request access").click()
    journey["first_request"] = created_request_id(ana)
    expect(ana.get_by_text("Pending", exact=True)).to_be_visible()
    screenshot(ana, "request-page")


# -- 2 ------------------------------------------------------------------------


def test_marc_approves_it_from_his_inbox(people, journey):
    (request_id,) = need(journey, "first_request")
    marc = people.page("marc")
    card = inbox_card(marc, request_id)
    expect(card).to_contain_text("Ana Requester (ana)")
    expect(card).to_contain_text("INC-4711: order totals look wrong")
    card.get_by_label("Comment").fill("OK for INC-4711, read-only is fine.")
    screenshot(marc, "inbox")
    card.get_by_role("button", name="Approve").click()
    expect(marc.get_by_role("status")).to_contain_text(f"Request #{request_id} approved.")
    expect(marc.get_by_role("article", name=re.compile(rf"^#{request_id}: "))).to_have_count(0)
    journey["approved"] = True


# -- 3 ------------------------------------------------------------------------


def test_ana_sees_her_credentials_once_and_they_work(people, journey):
    need(journey, "approved")
    ana = people.page("ana")
    nav(ana, "My access")
    show = ana.get_by_role("button", name="Show credentials")
    # Provisioning runs in a worker after the approval commits.
    deadline = time.monotonic() + 30
    while not show.is_visible():
        assert time.monotonic() < deadline, "Show credentials did not appear within 30 s"
        time.sleep(0.5)
        ana.reload()
    card = ana.get_by_role("article", name=re.compile(PROFILE))
    expect(card).to_contain_text("Time left:")
    journey["grant_url"] = card.get_by_role("link", name="Details").get_attribute("href")
    screenshot(ana, "my-access")

    show.click()
    expect(ana.get_by_role("heading", level=1)).to_contain_text(f"Credentials for {PROFILE}")
    expect(ana.get_by_role("alert")).to_contain_text("Shown once")
    dsn = ana.get_by_role("definition").filter(has_text=re.compile(r"^\s*postgresql://")).inner_text().strip()
    screenshot(ana, "credentials")

    conn = psycopg.connect(dsn, connect_timeout=5, autocommit=True)
    journey.setdefault("connections", []).append(conn)
    user, orders = conn.execute("SELECT current_user, (SELECT count(*) FROM public.orders)").fetchone()
    assert user.startswith("jit_")
    assert orders >= 4
    # Read-only: the profile grants no writes.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("INSERT INTO public.orders (customer, amount) VALUES ('Mallory', 1)")
    journey["dsn"], journey["session"] = dsn, conn

    # Once: the button is gone, and the page says so.
    nav(ana, "My access")
    expect(ana.get_by_role("button", name="Show credentials")).to_have_count(0)
    expect(ana.get_by_role("article", name=re.compile(PROFILE))).to_contain_text("Credentials were shown")


# -- 4 ------------------------------------------------------------------------


def test_ana_releases_it_and_the_target_lets_go(people, journey):
    dsn, session, grant_url = need(journey, "dsn", "session", "grant_url")
    ana = people.page("ana")
    nav(ana, "My access")
    ana.get_by_role("article", name=re.compile(PROFILE)).get_by_role("button", name="Release now").click()
    expect(ana.get_by_role("status")).to_contain_text(f"Releasing {PROFILE}")

    def session_terminated():
        try:
            session.execute("SELECT 1")
        except psycopg.OperationalError:
            return True
        return False

    wait_until(session_terminated, REVOCATION_TIMEOUT_S, message="the open session is terminated")

    def login_refused():
        try:
            psycopg.connect(dsn, connect_timeout=5).close()
        except psycopg.OperationalError:
            return True
        return False

    wait_until(login_refused, REVOCATION_TIMEOUT_S, message="a new login with the released credentials fails")

    ana.goto(grant_url)
    status = ana.get_by_role("definition").filter(has_text=re.compile(r"^(Revoked|Revoking|Active)"))
    deadline = time.monotonic() + REVOCATION_TIMEOUT_S
    while "Confirmed gone" not in ana.get_by_role("term").all_inner_texts():
        assert time.monotonic() < deadline, (
            f"the grant page never showed 'Confirmed gone' (status: {status.all_inner_texts()})"
        )
        time.sleep(0.5)
        ana.reload()
    expect(ana.get_by_text("Revoked", exact=True)).to_be_visible()
    expect(ana.locator("main")).to_contain_text("Released")
    screenshot(ana, "grant-page")
    journey["released"] = True


# -- 5 ------------------------------------------------------------------------


def test_second_request_refusals_and_denial(people, journey):
    ana = people.page("ana")
    submit_request(ana, duration="30m", justification="Want to poke around appdb for a while, no ticket for it yet.")
    ana.get_by_role("button", name="Request access").click()
    request_id = created_request_id(ana)
    journey["second_request"] = request_id
    decide = f"/access/requests/{request_id}/decide"

    # Ana may not approve her own request: the page offers no buttons, and a forged POST gets a 403 saying why.
    expect(ana.get_by_role("button", name="Approve")).to_have_count(0)
    response = post_form(ana, people.portal.url, decide, {"action": "approve", "comment": "self-service"})
    assert response.status == 403, response.status
    assert "You cannot decide your own request." in response.text()
    ana.set_content(response.text())
    screenshot(ana, "refused-own-request")

    # Eve is no approver (and in no group): she cannot see the request, nor decide it.
    eve = people.page("eve")
    nav(eve, "Request access")
    expect(eve.get_by_text("There is no access profile you may request.")).to_be_visible()
    response = eve.goto(f"/access/requests/{request_id}/")
    assert response.status == 404
    response = post_form(eve, people.portal.url, decide, {"action": "approve", "comment": "looks fine to me"})
    assert response.status == 404, response.status
    nav(eve, "Approval inbox")
    expect(eve.get_by_text("Nothing waits for your decision.")).to_be_visible()

    # Still pending; Marc denies it.
    ana.goto(f"/access/requests/{request_id}/")
    expect(ana.get_by_text("Pending", exact=True)).to_be_visible()
    marc = people.page("marc")
    card = inbox_card(marc, request_id)
    card.get_by_label("Comment").fill("Not without a ticket; use the reporting replica.")
    card.get_by_role("button", name="Deny").click()
    expect(marc.get_by_role("status")).to_contain_text(f"Request #{request_id} denied.")

    ana.goto(f"/access/requests/{request_id}/")
    expect(ana.get_by_text("Denied", exact=True)).to_be_visible()
    expect(ana.locator("main")).to_contain_text("Not without a ticket; use the reporting replica.")
    journey["denied"] = True


# -- 6 ------------------------------------------------------------------------


def test_audra_reads_the_trail(people, journey):
    need(journey, "released", "denied")
    audra = people.page("audra")
    # The auditors group makes her staff with read-only admin permissions.
    main_nav = audra.get_by_role("navigation", name="Main")
    main_nav.get_by_text("Manage", exact=True).click()
    main_nav.get_by_role("link", name="Admin").click()
    response = audra.goto("/admin/audit/auditevent/?o=0")  # oldest first
    assert response.status == 200, f"audit event list: HTTP {response.status}"
    expect(audra.get_by_role("heading", level=1)).to_contain_text("audit event")
    table = audra.get_by_role("table")
    for action in EXPECTED_TRAIL:
        expect(table.get_by_role("cell", name=action, exact=True).first).to_be_visible()
    # Both refusals (Ana's own approval, Eve's) are in the trail.
    expect(table.get_by_role("cell", name="request.decision_refused", exact=True)).to_have_count(2)
    screenshot(audra, "audit-trail")

    # Read-only: no way to add, change or delete an event.
    expect(audra.get_by_role("link", name=re.compile("^Add audit event"))).to_have_count(0)


def test_signing_out_ends_the_idp_session_too(people, portal):
    ana = people.page("ana")
    nav(ana, "My access")
    ana.get_by_role("button", name="Sign out").click()
    # RP-initiated logout: the IdP asks, then sends her back to the portal's login page.
    ana.get_by_role("button", name="Yes, sign me out").click()
    ana.wait_for_url(re.compile(re.escape(portal.url) + r"/accounts/login/"))
    expect(ana.get_by_role("link", name="Single sign-on")).to_be_visible()
    ana.goto(portal.url + "/access/")
    expect(ana).to_have_url(re.compile(r"/accounts/login/"))
    # The IdP forgot her too: signing in asks for the password again.
    ana.get_by_role("link", name="Single sign-on").click()
    ana.get_by_role("button", name="Continue").click()
    expect(ana.get_by_label("Password")).to_be_visible()


def test_dora_disabled_at_the_idp_cannot_sign_in(fresh_people, portal):
    dora = fresh_people.page("dora", signed_in=False)
    sign_in(dora, portal.url, "dora", expect_success=False)
    expect(dora.get_by_role("alert")).to_contain_text("This account is disabled.")
    screenshot(dora, "idp-refuses-dora")
    dora.goto(portal.url + "/access/")
    expect(dora).to_have_url(re.compile(r"/accounts/login/"))
    with portal.db() as conn:
        assert conn.execute("SELECT count(*) FROM accounts_user WHERE email = 'dora@example.com'").fetchone()[0] == 0
