"""The request form that helps, in the browser: fields per profile, default duration, time zone, live status, top bar.

Runs after test_journey.py (file order): it adds an SSH profile to the
portal's catalog for its own tests (the form only; nothing is provisioned
on an SSH host) and uses the journey's PostgreSQL profile for the live
update. Screenshots go to test-artifacts/e2e/.
"""

import datetime
import re
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from .harness import DEFAULT_UI_TIMEOUT_MS, ROOT, screenshot, sign_in
from .test_journey import PROFILE, nav, post_form

pytestmark = pytest.mark.e2e

SSH_PROFILE = "deploy hosts (SSH)"
ADD_SSH_PROFILE = (
    """
import datetime
from django.contrib.auth.models import Group
from grants.models import AccessProfile, Target
target, _ = Target.objects.update_or_create(name="e2e-ssh", defaults={"title": "E2E hosts", "kind": "ssh",
    "config": {"host": "127.0.0.1", "port": 22}, "secret_env": "JIT_E2E_SSH_CA"})
profile, _ = AccessProfile.objects.update_or_create(name="deploy-ssh", defaults={"title": %r, "target": target,
    "scope": {"principals": ["deploy"]}, "default_duration": datetime.timedelta(hours=2),
    "max_duration": datetime.timedelta(hours=4), "approver_group": Group.objects.get(name="db-approvers")})
profile.requestable_by.set([Group.objects.get(name="engineers")])
"""  # noqa: UP031 (a Python snippet full of braces: %r leaves them as they are)
    % SSH_PROFILE
)


@pytest.fixture(scope="module")
def ssh_profile(portal):
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", ADD_SSH_PROFILE],
        env=portal.env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return SSH_PROFILE


def field(page, label):
    """The .field block of the control labelled `label` (hidden by the script when its kind is not chosen)."""
    return page.locator(".field").filter(has=page.get_by_label(label, exact=True))


def test_choosing_a_profile_fills_its_duration_and_shows_only_its_fields(people, ssh_profile):
    ana = people.page("ana")
    nav(ana, "Request access")
    expect(field(ana, "SSH public key")).to_be_hidden()
    ana.get_by_label("Access profile").select_option(label=SSH_PROFILE)
    expect(ana.get_by_label("Duration")).to_have_value("2h")
    expect(ana.get_by_label("SSH public key")).to_be_visible()
    screenshot(ana, "request-form-ssh")
    ana.get_by_label("Access profile").select_option(label=PROFILE)
    expect(ana.get_by_label("Duration")).to_have_value("1h")
    expect(field(ana, "SSH public key")).to_be_hidden()
    # A duration the person typed stays when they change their mind about the profile.
    ana.get_by_label("Duration").fill("45m")
    ana.get_by_label("Access profile").select_option(label=SSH_PROFILE)
    expect(ana.get_by_label("Duration")).to_have_value("45m")
    screenshot(ana, "request-form-postgres")


def test_without_javascript_every_field_is_there_and_the_form_still_works(browser, portal, ssh_profile):
    context = browser.new_context(
        base_url=portal.url, viewport={"width": 1280, "height": 900}, java_script_enabled=False
    )
    context.set_default_timeout(DEFAULT_UI_TIMEOUT_MS)
    try:
        page = sign_in(context.new_page(), portal.url, "ana")
        page.goto(portal.url + "/access/request/")
        expect(page.get_by_label("SSH public key")).to_be_visible()
        expect(page.get_by_label("Time zone")).to_have_value("UTC")
        page.get_by_label("Access profile").select_option(label=SSH_PROFILE)
        page.get_by_label("Duration").fill("1h")
        page.get_by_label("Justification").fill("CHG-3003: deploy the hotfix to the web hosts and watch the logs.")
        page.get_by_role("button", name="Request access").click()
        page.wait_for_url(re.compile(r"/access/requests/\d+/$"))
        expect(page.get_by_role("heading", level=1)).to_contain_text(SSH_PROFILE)
        screenshot(page, "request-page-no-js")
        page.get_by_role("button", name="Cancel request").click()
        expect(page.get_by_text("Cancelled", exact=True)).to_be_visible()
    finally:
        context.close()


def test_start_is_entered_and_shown_in_the_browsers_time_zone(browser, portal):
    context = browser.new_context(
        base_url=portal.url, viewport={"width": 1280, "height": 900}, timezone_id="Asia/Tokyo"
    )
    context.set_default_timeout(DEFAULT_UI_TIMEOUT_MS)
    try:
        page = sign_in(context.new_page(), portal.url, "ana")
        nav(page, "Request access")
        expect(page.get_by_label("Time zone")).to_have_value("Asia/Tokyo")
        expect(page.get_by_text("(times in Asia/Tokyo)")).to_be_visible()
        day = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)).date()
        page.get_by_label("Access profile").select_option(label=PROFILE)
        page.get_by_label("Justification").fill("CHG-3004: the maintenance window of the orders database.")
        page.get_by_label("Start").fill(f"{day}T10:00")
        screenshot(page, "request-form-time-zone")
        page.get_by_role("button", name="Request access").click()
        page.wait_for_url(re.compile(r"/access/requests/\d+/$"))
        request_id = int(re.search(r"/access/requests/(\d+)/$", page.url).group(1))
        expect(page.get_by_text(f"{day} 10:00 JST (Asia/Tokyo)")).to_be_visible()
        screenshot(page, "request-page-time-zone")
        with portal.db() as conn:
            (starts_at,) = conn.execute(
                "SELECT starts_at FROM grants_accessrequest WHERE id = %s", [request_id]
            ).fetchone()
        assert starts_at == datetime.datetime(
            day.year, day.month, day.day, 1, 0, tzinfo=datetime.UTC
        )  # 10:00 JST is 01:00 UTC
        page.get_by_role("button", name="Cancel request").click()
        expect(page.get_by_text("Cancelled", exact=True)).to_be_visible()
    finally:
        context.close()


def test_request_page_follows_approval_to_show_credentials_without_a_reload(people, portal):
    ana, marc = people.page("ana"), people.page("marc")
    nav(ana, "Request access")
    ana.get_by_label("Access profile").select_option(label=PROFILE)
    ana.get_by_label("Justification").fill("INC-4812: compare the order totals again after the fix.")
    ana.get_by_role("button", name="Request access").click()
    ana.wait_for_url(re.compile(r"/access/requests/\d+/$"))
    request_id = int(re.search(r"/access/requests/(\d+)/$", ana.url).group(1))
    expect(ana.get_by_text("Pending", exact=True)).to_be_visible()
    expect(ana.get_by_text("Waiting for", exact=True)).to_be_visible()
    ana.evaluate("window.stillThisPage = true")
    marc.goto(portal.url + "/access/")
    answer = post_form(marc, portal.url, f"/access/requests/{request_id}/decide", {"action": "approve", "step": "0"})
    assert answer.status == 302
    show = ana.get_by_role("button", name="Show credentials")
    expect(show).to_be_visible(timeout=60_000)
    expect(ana.locator("[data-live-request]")).to_have_text("Approved")
    expect(ana.locator("[data-live-grant]")).to_have_text("Active")
    expect(ana.get_by_text("Waiting for", exact=True)).to_be_hidden()
    expect(ana.get_by_role("button", name="Cancel request")).to_be_hidden()
    assert ana.evaluate("window.stillThisPage") is True, "the page was reloaded"
    screenshot(ana, "request-page-ready")
    show.click()
    expect(ana.get_by_role("heading", level=1)).to_contain_text("Credentials")
    nav(ana, "My access")
    ana.get_by_role("article", name=re.compile(PROFILE)).get_by_role("button", name="Release now").click()
    expect(ana.get_by_role("status")).to_contain_text(f"Releasing {PROFILE}")


@pytest.mark.parametrize("username", ["ana", "marc", "audra", "eve"])
def test_top_bar_is_one_line_at_1280_px_and_fits_a_phone(people, username):
    page = people.page(username)
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(page.url.split("/access/")[0] + "/access/")
    items = page.locator("header.top > *, header.top nav > *")
    tops = {round(box["y"] + box["height"] / 2) for box in (items.nth(i).bounding_box() for i in range(items.count()))}
    assert max(tops) - min(tops) <= 4, f"the top bar of {username} wraps: item centres at {sorted(tops)}"
    height = page.locator("header.top").bounding_box()["height"]
    assert height < 70, f"the top bar of {username} is {height} px high"
    screenshot(page, f"top-bar-1280-{username}")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "the page scrolls sideways on a phone"
    expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Request access")).to_be_in_viewport()
    page.get_by_role("navigation", name="Main").get_by_text("Settings", exact=True).click()
    expect(page.get_by_role("link", name="API tokens")).to_be_in_viewport()
    screenshot(page, f"top-bar-390-{username}")
    page.keyboard.press("Escape")
    page.set_viewport_size({"width": 1280, "height": 900})


def test_request_form_fits_a_phone(people):
    ana = people.page("ana")
    ana.set_viewport_size({"width": 390, "height": 844})
    try:
        nav(ana, "Request access")
        ana.get_by_label("Access profile").select_option(label=PROFILE)
        assert ana.evaluate("document.documentElement.scrollWidth") <= 390, (
            "the request form scrolls sideways on a phone"
        )
        for label in ("Access profile", "Duration", "Justification", "Start", "Time zone"):
            box = ana.get_by_label(label, exact=True).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, f"{label} does not fit the width of a phone"
        screenshot(ana, "request-form-390")
    finally:
        ana.set_viewport_size({"width": 1280, "height": 900})
