"""Extensions: more time on active access, in place, through the policy or an approver.

Lifecycle (the portal and the target), pages (My access's extend form, the inbox) and the API.
"""

import datetime

import psycopg
import pytest
from django.urls import reverse
from django.utils import dateformat, timezone

from audit.models import AuditEvent
from grants import lifecycle, selectors
from grants.models import AccessRequest, Grant, Policy

from .conftest import JUSTIFICATION
from .support import detail_url

H = datetime.timedelta(hours=1)
RS = AccessRequest.Status
MY_ACCESS = reverse("grants:my_access")
INBOX = reverse("grants:inbox")


def text(response):
    return response.content.decode()


def shown(value):
    return dateformat.format(timezone.localtime(value), "Y-m-d H:i:s T")


def decide_url(req):
    return reverse("grants:request_decide", args=[req.pk])


def extend_url(grant):
    return reverse("grants:grant_extend", args=[grant.pk])


def valid_until(pg_cluster, role):
    with psycopg.connect(pg_cluster.admin_dsn) as conn:
        return conn.execute("SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s", [role]).fetchone()[0]


@pytest.fixture
def self_service(profile):
    """Up to 4 h in all is approved by the policy, extensions included."""
    profile.policy = Policy.objects.create(
        name="self-service",
        steps=[{"group": "db-approvers"}],
        auto_approve=[{"name": "within-4h", "max_duration": 4 * 3600}],
    )
    profile.save()
    return profile


# Lifecycle ----------------------------------------------------------------------------------------


def test_an_extension_moves_the_expiry_in_the_portal_and_on_the_target(active_grant, ana, self_service, pg_cluster):
    old = active_grant.expires_at
    # A policy attached after approval: the extension goes through it.
    req = lifecycle.request_extension(
        active_grant.pk, actor=ana, duration=H, justification="The migration needs another hour to finish"
    )
    req.refresh_from_db()
    assert req.status == "approved" and req.auto_rule == "within-4h"
    grant = Grant.objects.get(pk=active_grant.pk)
    assert grant.expires_at == old + H
    lifecycle.extend_on_target(grant.pk)
    assert valid_until(pg_cluster, grant.external_ref) == grant.expires_at
    trail = AuditEvent.objects.filter(object_type="grant", object_id=str(grant.pk)).order_by("id")
    assert list(trail.values_list("action", flat=True))[-2:] == ["grant.extended", "grant.extended_on_target"]


def test_an_extension_beyond_the_maximum_is_refused_with_what_is_left(active_grant, ana):
    with pytest.raises(lifecycle.InvalidRequestError) as exc:
        lifecycle.request_extension(active_grant.pk, actor=ana, duration=4 * H, justification=JUSTIFICATION)
    assert "you can add at most 3 h 30 min" in exc.value.errors["duration"]


def test_an_extension_needing_approval_waits_for_an_approver(active_grant, ana, otto):
    old = active_grant.expires_at
    req = lifecycle.request_extension(active_grant.pk, actor=ana, duration=H, justification=JUSTIFICATION)
    assert req.status == "pending"
    assert req in selectors.requests_awaiting(otto)
    lifecycle.approve_request(req.pk, actor=otto)
    assert Grant.objects.get(pk=active_grant.pk).expires_at == old + H
    assert Grant.objects.filter(user=ana).count() == 1  # no second grant


def test_only_the_holder_extends_and_only_active_access(active_grant, ana, otto):
    with pytest.raises(lifecycle.NotAllowedError):
        lifecycle.request_extension(active_grant.pk, actor=otto, duration=H, justification=JUSTIFICATION)
    lifecycle.revoke_grant(active_grant.pk, actor=ana, reason="released")
    with pytest.raises(lifecycle.TransitionError):
        lifecycle.request_extension(active_grant.pk, actor=ana, duration=H, justification=JUSTIFICATION)


# Pages: the inbox ---------------------------------------------------------------------------------


def test_extension_request_is_shown_as_such_in_the_inbox(client, ana, otto, active_grant):
    ext = lifecycle.request_extension(
        active_grant.pk, actor=ana, duration=H, justification="The migration needs another hour"
    )
    client.force_login(otto)
    page = text(client.get(INBOX))
    assert f"Extension of grant #{active_grant.pk}: +1 h (now ends at {shown(active_grant.expires_at)})" in page
    page = text(client.get(detail_url(ext)))
    assert f"Extension of grant #{active_grant.pk}: +1 h" in page

    client.post(decide_url(ext), {"action": "approve", "comment": "", "step": "0"})
    assert Grant.objects.get(pk=active_grant.pk).expires_at == active_grant.expires_at + H


# Pages: extending from My access ------------------------------------------------------------------


def test_my_access_offers_a_labelled_extend_form_for_active_access(client, ana, active_grant):
    client.force_login(ana)
    page = text(client.get(MY_ACCESS))
    assert f'action="{extend_url(active_grant)}"' in page
    assert f'<label for="extend-duration-{active_grant.pk}">Extra time</label>' in page
    assert f'<label for="extend-reason-{active_grant.pk}">Reason</label>' in page
    assert ">Extend</button>" in page


def test_an_extension_the_policy_approves_moves_the_end_at_once(client, ana, active_grant, self_service):
    old = active_grant.expires_at
    client.force_login(ana)
    response = client.post(
        extend_url(active_grant), {"duration": "1h", "justification": "The migration needs another hour"}, follow=True
    )
    assert response.redirect_chain == [(MY_ACCESS, 302)]
    grant = Grant.objects.get(pk=active_grant.pk)
    assert grant.expires_at == old + H
    ext = AccessRequest.objects.get(extends=grant)
    assert ext.status == RS.APPROVED and ext.auto_rule == "within-4h"
    assert f"Extended until {shown(grant.expires_at)}." in text(response)


def test_an_extension_needing_approval_is_sent_and_my_access_says_it_waits(client, ana, active_grant):
    old = active_grant.expires_at
    client.force_login(ana)
    response = client.post(
        extend_url(active_grant), {"duration": "30m", "justification": "The migration needs more time"}, follow=True
    )
    ext = AccessRequest.objects.get(extends=active_grant)
    assert ext.status == RS.PENDING
    assert ext.duration == datetime.timedelta(minutes=30)
    assert Grant.objects.get(pk=active_grant.pk).expires_at == old
    page = text(response)
    assert f"Extension request #{ext.pk} sent to approvers." in page
    assert f"request #{ext.pk}</a> waits for approval." in page
    assert ">Extend</button>" not in page


@pytest.mark.parametrize(
    "data, message",
    [
        (
            {"duration": "4h", "justification": JUSTIFICATION},
            "Extra time: This profile allows 4 h in all; you can add at most 3 h 30 min.",
        ),
        (
            {"duration": "soon", "justification": JUSTIFICATION},
            "Extra time: Write a duration such as 30m, 2h, 1h30m or 1d.",
        ),
        ({"duration": "0m", "justification": JUSTIFICATION}, "Extra time: Choose a duration longer than zero."),
        ({"duration": "1h", "justification": ""}, "Reason: This field is required."),
        ({"duration": "1h", "justification": "more"}, "Reason: Say why you need access in at least 20 characters."),
    ],
    ids=["over-maximum", "garbage", "zero", "missing-reason", "short-reason"],
)
def test_a_bad_extension_is_explained_in_a_message_naming_the_field(client, ana, active_grant, data, message):
    client.force_login(ana)
    response = client.post(extend_url(active_grant), data, follow=True)
    assert f'<li class="error" role="status">{message}</li>' in text(response)
    assert not AccessRequest.objects.filter(extends=active_grant).exists()


def test_a_second_extension_while_one_waits_is_explained(client, ana, active_grant):
    lifecycle.request_extension(active_grant.pk, actor=ana, duration=H, justification=JUSTIFICATION)
    client.force_login(ana)
    response = client.post(extend_url(active_grant), {"duration": "1h", "justification": JUSTIFICATION}, follow=True)
    assert "An extension of this access is already waiting for a decision." in text(response)
    assert AccessRequest.objects.filter(extends=active_grant).count() == 1


def test_extending_access_that_has_ended_is_a_warning(client, ana, active_grant):
    lifecycle.revoke_grant(active_grant.pk, actor=ana, reason=Grant.EndReason.RELEASED)
    client.force_login(ana)
    response = client.post(extend_url(active_grant), {"duration": "1h", "justification": JUSTIFICATION}, follow=True)
    assert '<li class="warning" role="status">Only active access can be extended.</li>' in text(response)
    assert not AccessRequest.objects.filter(extends=active_grant).exists()


def test_an_approver_cannot_extend_someone_elses_grant(client, otto, active_grant):
    client.force_login(otto)
    response = client.post(extend_url(active_grant), {"duration": "1h", "justification": JUSTIFICATION})
    assert response.status_code == 403
    assert "Only the holder can extend a grant." in text(response)
    assert not AccessRequest.objects.filter(extends=active_grant).exists()
    assert Grant.objects.get(pk=active_grant.pk).expires_at == active_grant.expires_at


def test_an_outsider_extending_someone_elses_grant_gets_not_found(client, eve, active_grant):
    client.force_login(eve)
    response = client.post(extend_url(active_grant), {"duration": "1h", "justification": JUSTIFICATION})
    assert response.status_code == 404
    assert not AccessRequest.objects.filter(extends=active_grant).exists()


def test_extending_by_get_is_not_allowed(client, ana, active_grant):
    client.force_login(ana)
    assert client.get(extend_url(active_grant)).status_code == 405


# API ----------------------------------------------------------------------------------------------


def test_holder_asks_for_an_extension(api, ana, otto, active_grant):
    response = api(ana).post(
        f"/requests/{active_grant.request_id}/extend", {"duration_seconds": 1800, "justification": JUSTIFICATION}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "pending"
    assert body["extends"] == active_grant.pk
    assert body["grant"]["id"] == active_grant.pk
    # An approver finds it in the inbox and approves it like any request.
    assert [r["id"] for r in api(otto).get("/inbox").json()] == [body["id"]]
    approved = api(otto).post(f"/requests/{body['id']}/approve").json()
    assert approved["status"] == "approved"
    extended = datetime.datetime.fromisoformat(approved["grant"]["expires_at"])
    assert abs(extended - (active_grant.expires_at + datetime.timedelta(minutes=30))) < datetime.timedelta(
        milliseconds=1
    )


def test_an_extension_beyond_the_profiles_maximum_names_the_field(api, ana, active_grant):
    response = api(ana).post(
        f"/requests/{active_grant.request_id}/extend", {"duration_seconds": 4 * 3600, "justification": JUSTIFICATION}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == "duration_seconds"
    assert body["message"].startswith("This profile allows 4 h in all; you can add at most 3 h 30 min")


def test_only_the_holder_extends(api, otto, active_grant):
    response = api(otto).post(
        f"/requests/{active_grant.request_id}/extend", {"duration_seconds": 600, "justification": JUSTIFICATION}
    )
    assert response.status_code == 403
    assert response.json() == {"code": "not_allowed", "message": "Only the holder can extend a grant."}
