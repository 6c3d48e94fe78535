"""Rights changed at the IdP count off the browser path too: API token and Slack decisions, tokens, live grants.

The people here sign in through a real OpenID Connect provider
(accounts/tests/oidc_idp.py), not the local personas; the IdP is then
changed as its administrator would, and nobody signs in again.
"""

import datetime
import threading

import pytest
from django.utils import timezone

from accounts import identity, tasks, tokens
from accounts.models import User
from audit.models import AuditEvent
from grants import lifecycle
from grants.models import AccessRequest, Grant
from notifications.tests.support import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from notifications.tests.test_notify import click

from .conftest import JUSTIFICATION

RS = AccessRequest.Status


def age(*users, seconds=3600):
    """Let time pass since these identities were last read from the IdP."""
    then = timezone.now() - datetime.timedelta(seconds=seconds)
    User.objects.filter(pk__in=[u.pk for u in users]).update(identity_refreshed_at=then, identity_checked_at=then)


def submit(requester, profile):
    return lifecycle.submit_request(
        requester=requester,
        profile=profile,
        duration=datetime.timedelta(minutes=30),
        justification=JUSTIFICATION,
        ticket="INC-4711",
    )


@pytest.fixture
def people(client, idp, groups):
    """ana (engineers) and otto (db-approvers), each signed in once through the IdP."""
    ana, otto = idp.sign_in(client, "ana"), idp.sign_in(client, "otto")
    client.logout()
    return ana, otto


def approve_by_token(client, user, req):
    secret = tokens.create_token(actor=user, name="ci", days=7)[1]
    return client.post(
        f"/api/v1/requests/{req.pk}/approve",
        data="{}",
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}"},
    )


# API token -----------------------------------------------------------------------------


def test_an_approver_removed_from_the_approver_group_at_the_idp_cannot_approve_by_api_token(
    client, idp, people, profile
):
    ana, otto = people
    req = submit(ana, profile)
    idp.set("otto", groups=[])
    age(otto)
    response = approve_by_token(client, otto, req)
    assert response.status_code == 404, response.json()  # no longer an approver: may not even see it
    req.refresh_from_db()
    assert req.status == RS.PENDING
    assert not otto.groups.filter(name="db-approvers").exists()
    assert AuditEvent.objects.filter(action="request.decision_refused", actor=otto).exists()


def test_an_approver_still_in_the_group_at_the_idp_approves_by_token_after_the_refresh(client, idp, people, profile):
    ana, otto = people
    req = submit(ana, profile)
    age(otto)
    assert approve_by_token(client, otto, req).status_code == 200
    req.refresh_from_db()
    assert req.status == RS.APPROVED
    otto.refresh_from_db()
    assert otto.identity_refreshed_at > timezone.now() - datetime.timedelta(minutes=1)


def test_a_decision_by_token_is_refused_while_the_idp_cannot_be_asked(client, idp, people, profile, settings):
    ana, otto = people
    req = submit(ana, profile)
    age(otto)
    settings.OIDC_ISSUER = "http://127.0.0.1:9"  # nothing listens there
    response = approve_by_token(client, otto, req)
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
    assert response.json()["message"].startswith(
        "Nothing was decided: your rights could not be checked with the identity provider"
    )
    req.refresh_from_db()
    assert req.status == RS.PENDING
    otto.refresh_from_db()
    assert otto.is_active


def test_a_recently_refreshed_approver_decides_without_asking_the_idp(client, idp, people, profile, settings):
    ana, otto = people
    req = submit(ana, profile)
    settings.OIDC_ISSUER = "http://127.0.0.1:9"  # would fail if asked
    assert approve_by_token(client, otto, req).status_code == 200


def test_an_approver_disabled_at_the_idp_is_deactivated_when_deciding_by_token(client, idp, people, profile):
    ana, otto = people
    req = submit(ana, profile)
    idp.set("otto", disabled=True)
    age(otto)
    response = approve_by_token(client, otto, req)
    assert response.status_code == 403
    assert "the identity provider no longer accepts it" in response.json()["message"]
    otto.refresh_from_db()
    assert not otto.is_active
    req.refresh_from_db()
    assert req.status == RS.PENDING


# Slack button --------------------------------------------------------------------------


@pytest.fixture
def slack(settings, monkeypatch):
    fake = FakeSlack()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    settings.SLACK_API_URL = fake.url + "/api"
    settings.SLACK_BOT_TOKEN, settings.SLACK_SIGNING_SECRET = BOT_TOKEN, SIGNING_SECRET
    settings.SLACK_WEBHOOK_URL = settings.SLACK_SECURITY_CHANNEL = ""
    monkeypatch.setattr("django_q.conf.Conf.SYNC", True)  # the click's task runs in this process
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_an_approver_removed_from_the_approver_group_at_the_idp_cannot_approve_by_slack_button(
    client, idp, people, profile, slack
):
    ana, otto = people
    req = submit(ana, profile)
    idp.set("otto", groups=[])
    age(otto)
    assert click(client, req, "U0OTTO").status_code == 200
    req.refresh_from_db()
    assert req.status == RS.PENDING
    assert (
        slack.sent("chat.postEphemeral")[0]["text"] == "Nothing was decided: You are not an approver for this request."
    )


def test_a_slack_decision_is_refused_while_the_idp_cannot_be_asked(client, idp, people, profile, slack, settings):
    ana, otto = people
    req = submit(ana, profile)
    age(otto)
    settings.OIDC_ISSUER = "http://127.0.0.1:9"
    click(client, req, "U0OTTO")
    req.refresh_from_db()
    assert req.status == RS.PENDING
    assert slack.sent("chat.postEphemeral")[0]["text"].startswith(
        "Nothing was decided: your rights could not be checked with the identity provider"
    )


# Deactivation --------------------------------------------------------------------------


def test_a_user_disabled_at_the_idp_loses_token_and_live_grant_at_the_next_sync(
    client, idp, people, profile, rw_profile, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr("django_q.conf.Conf.SYNC", True)  # the revocation task runs in this process
    ana, otto = people
    req = lifecycle.approve_request(submit(ana, profile).pk, actor=otto, comment="ok")
    grant = lifecycle.provision_grant(req.grant.pk)
    assert grant.status == Grant.Status.ACTIVE
    waiting = submit(ana, rw_profile)
    secret = tokens.create_token(actor=ana, name="laptop", days=7)[1]
    assert client.get("/api/v1/requests", headers={"Authorization": f"Bearer {secret}"}).status_code == 200

    idp.set("ana", disabled=True)
    age(ana, otto)
    with django_capture_on_commit_callbacks(execute=True):
        counts = tasks.sync_identities()
    assert (counts[identity.GONE], counts[identity.REFRESHED]) == (1, 1)

    ana.refresh_from_db()
    assert not ana.is_active
    response = client.get("/api/v1/requests", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 401
    assert response.json()["message"] == "The account of this API token is disabled."
    grant.refresh_from_db()
    assert grant.status == Grant.Status.REVOKED and grant.end_reason == "policy"
    waiting.refresh_from_db()
    assert waiting.status == RS.CANCELLED
    assert AuditEvent.objects.filter(action="user.deactivated", details__user="ana").exists()
    assert AuditEvent.objects.filter(action="grant.revoke_requested", details__reason="policy").exists()
