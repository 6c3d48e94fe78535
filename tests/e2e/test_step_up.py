"""Step-up in a real browser: approving a high-risk request sends marc back to the IdP, then it is approved.

The portal runs with STEP_UP_MAX_AGE=0 and STEP_UP_ACR_VALUES=urn:jitportal:idp:mfa (conftest), so the IdP
asks for the password again at every step-up, and only a sign-in with marc's one-time code counts.
"""

import re

import pytest
from playwright.sync_api import expect

from .catalog import CRITICAL_TITLE
from .harness import PASSWORDS, screenshot
from .test_journey import nav

pytestmark = pytest.mark.e2e

MARC_OTP = "135790"  # tests/e2e/idp/accounts.json


def _ask_for_critical(ana) -> int:
    nav(ana, "Request access")
    ana.get_by_label("Access profile").select_option(label=CRITICAL_TITLE)
    ana.get_by_label("Duration").fill("30m")
    ana.get_by_label("Justification").fill("INC-5150: the nightly job corrupted orders; I must read them to repair it.")
    ana.get_by_role("button", name="Request access").click()
    ana.wait_for_url(re.compile(r"/access/requests/\d+/$"))
    return int(re.search(r"/access/requests/(\d+)/$", ana.url).group(1))


def _sign_in_again(marc, idp, *, otp: str):
    marc.wait_for_url(re.compile("^" + re.escape(idp.issuer) + "/"))
    expect(marc.get_by_role("heading", name="Sign in")).to_be_visible()
    marc.get_by_label("Username").fill("marc")
    marc.get_by_label("Password").fill(PASSWORDS["marc"])
    marc.get_by_label("One-time code (if you have one)").fill(otp)
    marc.get_by_role("button", name="Sign in").click()


def _request_row(portal, request_id):
    with portal.db() as conn:
        return conn.execute(
            "SELECT status, decision_comment FROM grants_accessrequest WHERE id = %s", [request_id]
        ).fetchone()


def _step_up_of_approval(portal, request_id):
    with portal.db() as conn:
        return conn.execute(
            "SELECT details->'step_up' FROM audit_auditevent WHERE action = 'request.approved' AND object_id = %s",
            [str(request_id)],
        ).fetchone()


def test_marc_signs_in_again_at_the_idp_and_the_high_risk_approval_goes_through(fresh_people, portal, idp):
    request_id = _ask_for_critical(fresh_people.page("ana"))
    marc = fresh_people.page("marc")
    marc.goto(f"/access/requests/{request_id}/")
    expect(marc.get_by_text("A high-risk profile: Approve first asks you to sign in again")).to_be_visible()
    marc.get_by_label("Comment").fill("Checked with the incident lead: read-only is enough.")
    marc.get_by_role("button", name="Approve").click()

    # Back at the IdP although he signed in a moment ago (max_age=0); the password alone is not enough.
    _sign_in_again(marc, idp, otp="")
    marc.wait_for_url(f"{portal.url}/access/requests/{request_id}/")
    expect(marc.get_by_role("status")).to_contain_text(
        "says you signed in with urn:jitportal:idp:pwd, not urn:jitportal:idp:mfa"
    )
    assert _request_row(portal, request_id)[0] == "pending"

    marc.get_by_label("Comment").fill("Checked with the incident lead: read-only is enough.")
    marc.get_by_role("button", name="Approve").click()
    marc.wait_for_url(re.compile("^" + re.escape(idp.issuer) + "/"))
    screenshot(marc, "step-up-at-the-idp")
    _sign_in_again(marc, idp, otp=MARC_OTP)
    marc.wait_for_url(f"{portal.url}/access/requests/{request_id}/")
    expect(marc.get_by_role("status")).to_contain_text(f"Request #{request_id} approved.")
    screenshot(marc, "step-up-approved")

    assert _request_row(portal, request_id) == ("approved", "Checked with the incident lead: read-only is enough.")
    (step_up,) = _step_up_of_approval(portal, request_id)
    assert (step_up["method"], step_up["acr"], step_up["amr"]) == ("idp", "urn:jitportal:idp:mfa", ["pwd", "otp"])
