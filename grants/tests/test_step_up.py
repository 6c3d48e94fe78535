"""Step-up at the moment of risk: the rule, the lifecycle, the pages (the password without an IdP, the real IdP
with max_age and acr), the API and Slack.

The IdP is the e2e suite's oidc-provider (accounts/tests/oidc_idp.py), driven by hand as a browser would; Slack
is notifications/tests/support.py's stand-in for its Web API on loopback.
"""

import datetime
import itertools
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.urls import reverse

from accounts import tokens
from accounts.stepup import GRACE, StepUp, problem
from audit.models import AuditEvent
from grants import lifecycle, policy
from grants.models import AccessRequest, Policy
from notifications.tests.support import fake_slack, slack  # noqa: F401 (fixtures: Slack's stand-in)
from notifications.tests.test_notify import click

from .conftest import JUSTIFICATION

RS = AccessRequest.Status
NOW = 1_800_000_000.0
MINUTES = datetime.timedelta(minutes=1)
# Every test here runs with the notification tests' settings: the portal's address, no Slack or security contacts
# unless a test sets them, and enqueued tasks run in this process (notifications/tests/support.py).
pytestmark = pytest.mark.usefixtures("portal")


def _risky(profile, risk="high"):
    profile.risk = risk
    profile.save(update_fields=["risk"])
    return profile


def _event(action):
    return AuditEvent.objects.filter(action=action).order_by("-id").first()


# The rule, as a table -----------------------------------------------------------------------------------------

EVIDENCE = {
    "none": None,
    "fresh": StepUp("idp", int(NOW) - 30, "urn:jitportal:idp:pwd", ("pwd",)),
    "stale": StepUp("idp", int(NOW) - 3600, "urn:jitportal:idp:pwd", ("pwd",)),
    "password": StepUp("password", int(NOW) - 30),
}
RISKS, ACTIONS, CHANNELS = ("", "low", "high"), ("approve", "break_glass", "reveal"), ("web", "api", "slack")


def _allowed(risk, channel, freshness):
    # The rule in words: only a high-risk profile asks anything; then only the portal's pages can
    # show a fresh sign-in (at the IdP, or the password without one), so tokens and Slack are refused.
    return risk != "high" or (channel == "web" and freshness in ("fresh", "password"))


@pytest.mark.parametrize(
    "risk,action,channel,freshness",
    list(itertools.product(RISKS, ACTIONS, CHANNELS, EVIDENCE)),
    ids=lambda v: v or "no-risk",
)
def test_the_step_up_rule(settings, profile, risk, action, channel, freshness):
    settings.STEP_UP_RISKS, settings.STEP_UP_MAX_AGE = ["high"], 300
    refusal = policy.step_up_refusal(
        [_risky(profile, risk)], action=action, channel=channel, step_up=EVIDENCE[freshness], now=NOW
    )
    assert (refusal is None) == _allowed(risk, channel, freshness), refusal
    if refusal:
        assert refusal.startswith("appdb read-only is a high-risk profile: ")
        if channel != "web":
            assert ("an API token" if channel == "api" else "a Slack button") in refusal


@pytest.mark.parametrize(
    "setting,channel,action",
    [
        ("STEP_UP_ALLOW_API", "api", "approve"),
        ("STEP_UP_ALLOW_API", "api", "reveal"),
        ("STEP_UP_ALLOW_SLACK", "slack", "approve"),
    ],
)
def test_a_setting_lets_tokens_or_slack_do_it_and_the_trail_says_it_was_waived(
    settings, profile, setting, channel, action
):
    setattr(settings, setting, True)
    _risky(profile)
    assert policy.step_up_refusal([profile], action=action, channel=channel, step_up=None, now=NOW) is None
    assert policy.step_up_details([profile], channel=channel, step_up=None) == {
        "step_up": {"waived": channel, "setting": setting}
    }
    other = "slack" if channel == "api" else "api"
    assert policy.step_up_refusal([profile], action=action, channel=other, step_up=None, now=NOW)


@pytest.mark.parametrize(
    "age,allowed",
    [(0, True), (GRACE, True), (GRACE + 1, False)],
    ids=["just-now", "max-age-plus-grace", "one-second-more"],
)
def test_max_age_zero_counts_the_sign_in_for_the_round_trip_only(settings, age, allowed):
    settings.STEP_UP_MAX_AGE = 0
    assert (problem(StepUp("idp", int(NOW) - age), now=NOW) is None) == allowed


@pytest.mark.parametrize(
    "acr,amr,method,wanted_acr,wanted_amr,allowed",
    [
        ("urn:jitportal:idp:mfa", ("pwd", "otp"), "idp", ["urn:jitportal:idp:mfa"], [], True),
        ("urn:jitportal:idp:pwd", ("pwd",), "idp", ["urn:jitportal:idp:mfa"], [], False),
        ("", (), "idp", ["urn:jitportal:idp:mfa"], [], False),
        ("urn:jitportal:idp:mfa", ("pwd", "otp"), "idp", [], ["otp", "hwk"], True),
        ("urn:jitportal:idp:mfa", ("pwd",), "idp", [], ["otp", "hwk"], False),
        # Without an IdP there is nobody to vouch for a second factor: the password is what is checked.
        ("", (), "password", ["urn:jitportal:idp:mfa"], ["otp"], True),
    ],
)
def test_acr_and_amr_are_checked_where_configured(settings, acr, amr, method, wanted_acr, wanted_amr, allowed):
    settings.STEP_UP_ACR_VALUES, settings.STEP_UP_AMR_VALUES = wanted_acr, wanted_amr
    found = problem(StepUp(method, int(NOW) - 5, acr, amr), now=NOW)
    assert (found is None) == allowed, found


def test_only_the_risks_step_up_risks_names_ask(settings, profile):
    settings.STEP_UP_RISKS = ["high", "medium"]
    assert policy.needs_step_up(_risky(profile, "medium"))
    settings.STEP_UP_RISKS = []
    assert not policy.needs_step_up(_risky(profile, "high"))


# The lifecycle ------------------------------------------------------------------------------------------------


def test_approving_a_high_risk_request_without_a_step_up_is_refused_and_recorded(pending_request, otto, profile):
    _risky(profile)
    with pytest.raises(lifecycle.StepUpRequiredError, match="needs a fresh sign-in: sign in again first"):
        lifecycle.approve_request(pending_request.pk, actor=otto, comment="ok")
    pending_request.refresh_from_db()
    assert pending_request.status == RS.PENDING
    refused = _event("request.step_up_refused")
    assert (refused.actor, refused.details["channel"], refused.details["attempted"]) == (otto, "web", "approved")


def test_a_fresh_step_up_approves_and_the_trail_keeps_its_auth_time_and_acr(pending_request, otto, profile):
    _risky(profile)
    step_up = StepUp("idp", int(time.time()) - 5, "urn:jitportal:idp:mfa", ("pwd", "otp"))
    lifecycle.approve_request(pending_request.pk, actor=otto, comment="ok", step_up=step_up)
    pending_request.refresh_from_db()
    assert pending_request.status == RS.APPROVED
    assert _event("request.approved").details["step_up"] == step_up.details()
    assert step_up.details()["acr"] == "urn:jitportal:idp:mfa" and step_up.details()["amr"] == ["pwd", "otp"]


def test_a_bundle_with_one_high_risk_member_needs_the_step_up_to_approve_any_of_it(ana, marc, profile, rw_profile):
    _risky(rw_profile)
    low, high = lifecycle.submit_bundle(
        requester=ana,
        profiles=[profile, rw_profile],
        duration=30 * MINUTES,
        justification=JUSTIFICATION,
        ticket="INC-4711",
    )
    with pytest.raises(lifecycle.StepUpRequiredError, match="appdb read-write is a high-risk profile"):
        lifecycle.approve_request(low.pk, actor=marc)
    assert set(AccessRequest.objects.values_list("status", flat=True)) == {RS.PENDING}
    lifecycle.approve_request(low.pk, actor=marc, step_up=StepUp("password", int(time.time())))
    assert set(AccessRequest.objects.values_list("status", flat=True)) == {RS.APPROVED}


def test_denying_needs_no_step_up(pending_request, otto, profile):
    _risky(profile)
    lifecycle.deny_request(pending_request.pk, actor=otto, comment="no")
    pending_request.refresh_from_db()
    assert pending_request.status == RS.DENIED


def test_the_requester_still_cannot_approve_their_own_request_with_a_step_up(pending_request, ana, profile):
    _risky(profile)
    with pytest.raises(lifecycle.NotAllowedError, match="own request"):
        lifecycle.approve_request(pending_request.pk, actor=ana, step_up=StepUp("password", int(time.time())))


# Pages without an IdP: the password ---------------------------------------------------------------------------


def _approve(browser, req, comment="Checked INC-4711, fine"):
    return browser.post(
        reverse("grants:request_decide", args=[req.pk]), {"action": "approve", "step": "0", "comment": comment}
    )


def _password_step(browser, response, password):
    """Follow the redirect to the password page, answer it, and return the page that carried the action out."""
    assert response.status_code == 302 and response["Location"].startswith(reverse("accounts:step_up")), response
    page = browser.get(response["Location"])
    assert page.status_code == 200
    next_url = parse_qs(urlsplit(response["Location"]).query)["next"][0]
    confirmed = browser.post(reverse("accounts:step_up"), {"password": password, "next": next_url, "for": "approve"})
    if confirmed.status_code != 302:
        return confirmed
    assert confirmed["Location"] == next_url
    return browser.get(next_url)


def test_in_demo_mode_the_approver_re_enters_the_password_and_the_approval_goes_through_with_its_comment(
    client, pending_request, otto, profile
):
    _risky(profile)
    client.force_login(otto)
    asked = _approve(client, pending_request)
    page = client.get(asked["Location"])
    assert "demo mode, without an identity provider" in page.content.decode()
    assert "re-enter your password" in page.content.decode()
    done = _password_step(client, asked, "otto-password-123")
    assert done.status_code == 302 and done["Location"] == reverse("grants:request_detail", args=[pending_request.pk])
    pending_request.refresh_from_db()
    assert (pending_request.status, pending_request.decision_comment) == (RS.APPROVED, "Checked INC-4711, fine")
    assert _event("request.approved").details["step_up"]["method"] == "password"
    assert _event("user.step_up").details["for"] == "approve"


def test_a_wrong_password_does_nothing_and_is_recorded(client, pending_request, otto, profile):
    _risky(profile)
    client.force_login(otto)
    page = _password_step(client, _approve(client, pending_request), "not-the-password")
    assert page.status_code == 200 and "That is not your password." in page.content.decode()
    pending_request.refresh_from_db()
    assert pending_request.status == RS.PENDING
    assert _event("user.step_up_refused").details["reason"] == "wrong password"
    assert _event("user.step_up_refused").details["ip"] == "127.0.0.1"


def test_a_low_risk_approval_asks_for_nothing(client, pending_request, otto, profile):
    _risky(profile, "low")
    client.force_login(otto)
    assert _approve(client, pending_request)["Location"] == reverse("grants:request_detail", args=[pending_request.pk])
    pending_request.refresh_from_db()
    assert pending_request.status == RS.APPROVED


def test_the_resume_link_works_once_and_only_in_its_own_session(client, pending_request, otto, profile):
    _risky(profile)
    client.force_login(otto)
    asked = _approve(client, pending_request)
    next_url = parse_qs(urlsplit(asked["Location"]).query)["next"][0]
    other = Client()
    other.force_login(otto)
    assert other.get(next_url)["Location"] == reverse("grants:my_access"), (
        "another session of the same person has nothing waiting"
    )
    pending_request.refresh_from_db()
    assert pending_request.status == RS.PENDING
    _password_step(client, asked, "otto-password-123")
    again = client.get(next_url, follow=True)
    assert "Nothing is waiting for that sign-in any more" in again.content.decode()


def test_credentials_of_a_high_risk_grant_are_shown_after_the_password(client, active_grant, ana, profile):
    _risky(profile)
    client.force_login(ana)
    asked = client.post(reverse("grants:grant_credentials", args=[active_grant.pk]))
    active_grant.refresh_from_db()
    assert active_grant.credentials_available, "nothing is shown before the password"
    shown = _password_step(client, asked, "ana-password-123")
    assert shown.status_code == 200 and shown["Cache-Control"] == "no-store"
    assert "password" in shown.content.decode().lower()
    active_grant.refresh_from_db()
    assert active_grant.credentials_seen_at is not None
    assert _event("grant.credentials_viewed").details["step_up"]["method"] == "password"


def test_break_glass_on_a_high_risk_profile_waits_for_the_password_then_is_granted_without_retyping(
    client, ana, profile
):
    profile.policy = Policy.objects.create(
        name="emergency", steps=[{"group": "db-approvers"}], break_glass_groups=["engineers"]
    )
    profile.save(update_fields=["policy"])
    _risky(profile)
    client.force_login(ana)
    form = {
        "profile": profile.pk,
        "duration": "30m",
        "justification": JUSTIFICATION,
        "ticket": "INC-4711",
        "break_glass": "on",
    }
    asked = client.post(reverse("grants:request_new"), form)
    assert not AccessRequest.objects.exists()
    done = _password_step(client, asked, "ana-password-123")
    created = AccessRequest.objects.get()
    assert done["Location"] == reverse("grants:request_detail", args=[created.pk])
    assert (created.break_glass, created.status, created.justification) == (True, RS.APPROVED, JUSTIFICATION)
    assert _event("request.break_glass").details["step_up"]["method"] == "password"


# Pages with the real IdP: max_age, acr ------------------------------------------------------------------------


@pytest.fixture
def with_idp(idp, settings, profile, groups):
    """ana and otto signed in through the IdP (their own browsers), ana's high-risk request pending."""
    settings.STEP_UP_MAX_AGE = 0  # the IdP must ask again at every step-up
    _risky(profile)
    ana_browser, otto_browser = Client(), Client()
    ana = idp.sign_in(ana_browser, "ana")
    otto = idp.sign_in(otto_browser, "otto")
    req = lifecycle.submit_request(
        requester=ana, profile=profile, duration=30 * MINUTES, justification=JUSTIFICATION, ticket="INC-4711"
    )
    return idp, otto_browser, otto, req


def test_an_approver_is_sent_back_to_the_idp_with_max_age_and_the_approval_goes_through(with_idp):
    idp, browser, otto, req = with_idp
    asked = _approve(browser, req)
    sent = parse_qs(urlsplit(asked["Location"]).query)
    assert asked["Location"].startswith(idp.issuer) and sent["max_age"] == ["0"] and sent["nonce"]
    back = idp.authorize(browser, asked, "otto")
    assert idp.prompted, "the IdP asked for the password again"
    assert back.status_code == 302 and back["Location"].startswith("/access/step-up/")
    done = browser.get(back["Location"])
    assert done["Location"] == reverse("grants:request_detail", args=[req.pk])
    req.refresh_from_db()
    assert (req.status, req.decided_by, req.decision_comment) == (RS.APPROVED, otto, "Checked INC-4711, fine")
    step_up = _event("request.approved").details["step_up"]
    assert (step_up["method"], step_up["acr"], step_up["amr"]) == ("idp", "urn:jitportal:idp:pwd", ["pwd"])
    auth_time = datetime.datetime.fromisoformat(step_up["auth_time"])
    assert abs((datetime.datetime.now(datetime.UTC) - auth_time).total_seconds()) < GRACE
    assert "_auth_user_id" in browser.session and int(browser.session["_auth_user_id"]) == otto.pk


def test_an_acr_the_portal_asks_for_must_be_in_the_id_token(with_idp, settings):
    idp, browser, otto, req = with_idp
    settings.STEP_UP_ACR_VALUES = ["urn:jitportal:idp:mfa"]
    idp.set("otto", otp="246810")
    asked = _approve(browser, req)
    assert parse_qs(urlsplit(asked["Location"]).query)["acr_values"] == ["urn:jitportal:idp:mfa"]
    done = browser.get(idp.authorize(browser, asked, "otto")["Location"], follow=True)  # the password alone
    assert "says you signed in with urn:jitportal:idp:pwd, not urn:jitportal:idp:mfa" in done.content.decode()
    req.refresh_from_db()
    assert req.status == RS.PENDING
    assert _event("request.step_up_refused").details["step_up"]["acr"] == "urn:jitportal:idp:pwd"
    browser.get(idp.authorize(browser, _approve(browser, req), "otto", otp="246810")["Location"])
    req.refresh_from_db()
    assert req.status == RS.APPROVED
    assert _event("request.approved").details["step_up"]["amr"] == ["pwd", "otp"]


def test_signing_in_at_the_idp_as_someone_else_does_nothing(with_idp):
    idp, browser, otto, req = with_idp
    done = browser.get(idp.authorize(browser, _approve(browser, req), "marc")["Location"], follow=True)
    assert "Nothing was decided" in done.content.decode()
    req.refresh_from_db()
    assert req.status == RS.PENDING
    assert _event("user.step_up_refused").details["reason"] == "signed in at the identity provider as someone else"
    assert int(browser.session["_auth_user_id"]) == otto.pk, "still otto in the portal"


# The API ------------------------------------------------------------------------------------------------------


def _api(client, user, method, path):
    secret = tokens.create_token(actor=user, name="test", days=30)[1]
    call = client.post if method == "POST" else client.get
    return call("/api/v1" + path, content_type="application/json", headers={"Authorization": f"Bearer {secret}"})


def test_an_api_token_cannot_approve_a_high_risk_request(client, settings, pending_request, otto, profile):
    _risky(profile)
    refused = _api(client, otto, "POST", f"/requests/{pending_request.pk}/approve")
    assert refused.status_code == 403 and refused.json()["code"] == "step_up_required"
    assert "an API token cannot do it" in refused.json()["message"]
    assert f"/access/requests/{pending_request.pk}/" in refused.json()["message"]
    assert _event("request.step_up_refused").details["channel"] == "api"
    settings.STEP_UP_ALLOW_API = True
    assert _api(client, otto, "POST", f"/requests/{pending_request.pk}/approve").json()["status"] == RS.APPROVED
    assert _event("request.approved").details["step_up"] == {"waived": "api", "setting": "STEP_UP_ALLOW_API"}


def test_an_api_token_cannot_read_the_credentials_of_a_high_risk_grant(client, active_grant, ana, profile):
    _risky(profile)
    refused = _api(client, ana, "GET", f"/requests/{active_grant.request_id}/credentials")
    assert refused.status_code == 403 and refused.json()["code"] == "step_up_required"
    active_grant.refresh_from_db()
    assert active_grant.credentials_available
    assert _event("grant.credentials_refused").details["channel"] == "api"


# Slack --------------------------------------------------------------------------------------------------------


def test_a_slack_approve_of_a_high_risk_request_answers_with_a_link_to_the_portal(
    client,
    slack,  # noqa: F811 (pytest: the parameter is the imported fixture)
    settings,
    pending_request,
    otto,
    profile,
):
    _risky(profile)
    click(client, pending_request, "U0OTTO")
    pending_request.refresh_from_db()
    assert pending_request.status == RS.PENDING
    (said,) = slack.sent("chat.postEphemeral")
    assert "a Slack button cannot do it" in said["text"]
    assert said["text"].endswith(f"Approve it here: {settings.PORTAL_URL}/access/requests/{pending_request.pk}/")
    assert not slack.sent("chat.update")
    settings.STEP_UP_ALLOW_SLACK = True
    click(client, pending_request, "U0OTTO")
    pending_request.refresh_from_db()
    assert pending_request.status == RS.APPROVED
