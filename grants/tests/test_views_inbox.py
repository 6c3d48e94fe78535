"""The approval inbox at /access/inbox/ and deciding a request from it or from the request page."""

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from grants import lifecycle
from grants.models import AccessRequest, Grant

from .conftest import JUSTIFICATION
from .support import detail_url

URL = reverse("grants:inbox")
RS, GS = AccessRequest.Status, Grant.Status


def text(response):
    return response.content.decode()


def decide_url(req):
    return reverse("grants:request_decide", args=[req.pk])


@pytest.fixture
def rw_request(ana, rw_profile):
    return lifecycle.submit_request(
        requester=ana, profile=rw_profile, duration=datetime.timedelta(hours=1), justification=JUSTIFICATION, ticket=""
    )


# The inbox -----------------------------------------------------------------


def test_approver_sees_a_pending_request_with_everything_needed_to_decide(client, otto, pending_request):
    # Backdated so the age on the page is a fixed "3 hours", not "0 minutes".
    AccessRequest.objects.filter(pk=pending_request.pk).update(created_at=timezone.now() - datetime.timedelta(hours=3))
    client.force_login(otto)
    response = client.get(URL)
    assert response.status_code == 200
    page = text(response)
    assert f"#{pending_request.pk}</a>: Ana (ana) asks for appdb read-only" in page
    assert "<dt>Requester</dt><dd>Ana (ana)</dd>" in page
    assert "<dt>Profile</dt><dd>appdb read-only</dd>" in page
    assert "<dt>Target</dt><dd>appdb-cluster</dd>" in page
    assert "<dt>Duration</dt><dd>30 min</dd>" in page
    assert ">3\xa0hours ago</time>" in page
    assert "<dt>Ticket</dt><dd>INC-4711</dd>" in page
    assert JUSTIFICATION in page
    assert ">Approve</button>" in page
    assert ">Deny</button>" in page
    assert '<label for="comment-' in page


def test_approver_sees_the_requesters_recent_history(client, ana, otto, profile, pending_request):
    lifecycle.deny_request(pending_request.pk, actor=otto, comment="use the replica")
    lifecycle.submit_request(
        requester=ana, profile=profile, duration=datetime.timedelta(minutes=30), justification=JUSTIFICATION + " again"
    )
    client.force_login(otto)
    page = text(client.get(URL))
    assert "Recent history of ana" in page
    assert "appdb read-only for 30 min: <strong>Denied</strong> by Otto" in page
    assert "appdb read-only for 30 min: <strong>Pending</strong>" in page


def test_requester_does_not_see_their_own_request_in_the_inbox(client, ana, pending_request):
    client.force_login(ana)
    page = text(client.get(URL))
    assert "Nothing waits for your decision." in page
    assert JUSTIFICATION not in page


def test_approver_does_not_see_their_own_request_in_the_inbox(client, marc, profile):
    lifecycle.submit_request(
        requester=marc, profile=profile, duration=datetime.timedelta(minutes=30), justification=JUSTIFICATION
    )
    client.force_login(marc)
    assert "Nothing waits for your decision." in text(client.get(URL))


def test_outsider_sees_an_empty_inbox(client, eve, pending_request, rw_request):
    client.force_login(eve)
    response = client.get(URL)
    assert response.status_code == 200
    page = text(response)
    assert "Nothing waits for your decision." in page
    assert JUSTIFICATION not in page


def test_decided_requests_leave_the_inbox(client, otto, approved_request):
    client.force_login(otto)
    assert "Nothing waits for your decision." in text(client.get(URL))


def test_manager_sees_a_request_their_report_made_for_a_manager_approved_profile(client, marc, rw_request):
    client.force_login(marc)
    page = text(client.get(URL))
    assert f"#{rw_request.pk}</a>: Ana (ana) asks for appdb read-write" in page


def test_approver_who_is_not_the_manager_does_not_see_a_manager_approved_request(client, otto, rw_request):
    client.force_login(otto)
    page = text(client.get(URL))
    assert "Nothing waits for your decision." in page
    assert "appdb read-write" not in page


def test_anonymous_user_is_sent_to_the_login_page_from_the_inbox(client, pending_request):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


# Deciding ------------------------------------------------------------------


def test_approver_approves_from_the_inbox_and_a_grant_is_scheduled(client, otto, pending_request):
    client.force_login(otto)
    response = client.post(
        decide_url(pending_request), {"action": "approve", "comment": "ok for INC-4711", "next": "inbox"}
    )
    assert response.status_code == 302
    assert response["Location"] == URL
    pending_request.refresh_from_db()
    assert pending_request.status == RS.APPROVED
    assert pending_request.decided_by == otto
    assert pending_request.decision_comment == "ok for INC-4711"
    assert pending_request.grant.status == GS.SCHEDULED
    event = AuditEvent.objects.get(action="request.approved")
    assert event.actor == otto
    assert event.object_id == str(pending_request.pk)
    assert AuditEvent.objects.filter(action="grant.scheduled").count() == 1

    page = text(client.get(URL))
    assert f"Request #{pending_request.pk} approved." in page
    assert "Nothing waits for your decision." in page


def test_approval_enqueues_provisioning_after_commit(client, otto, pending_request, django_capture_on_commit_callbacks):
    client.force_login(otto)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        client.post(decide_url(pending_request), {"action": "approve", "comment": ""})
    assert len(callbacks) == 2  # provisioning, and telling the requester


def test_approver_denies_from_the_request_page(client, otto, pending_request):
    client.force_login(otto)
    response = client.post(decide_url(pending_request), {"action": "deny", "comment": "use the replica"})
    assert response.status_code == 302
    assert response["Location"] == detail_url(pending_request)
    pending_request.refresh_from_db()
    assert pending_request.status == RS.DENIED
    assert pending_request.decided_by == otto
    assert pending_request.decision_comment == "use the replica"
    assert not Grant.objects.exists()
    assert AuditEvent.objects.get(action="request.denied").actor == otto

    page = text(client.get(detail_url(pending_request)))
    assert f"Request #{pending_request.pk} denied." in page
    assert "Denied by Otto (otto)" in page
    assert "use the replica" in page
    assert ">Approve</button>" not in page


def test_manager_approves_a_request_for_a_manager_approved_profile(client, marc, rw_request):
    client.force_login(marc)
    client.post(decide_url(rw_request), {"action": "approve", "comment": ""})
    rw_request.refresh_from_db()
    assert rw_request.status == RS.APPROVED
    assert rw_request.decided_by == marc


def test_deciding_an_already_decided_request_warns_and_changes_nothing(client, marc, otto, approved_request):
    client.force_login(marc)
    response = client.post(decide_url(approved_request), {"action": "deny", "comment": "too late"}, follow=True)
    assert response.status_code == 200
    assert f"Request #{approved_request.pk} was already approved; nothing changed." in text(response)
    approved_request.refresh_from_db()
    assert approved_request.status == RS.APPROVED
    assert approved_request.decided_by == otto
    assert approved_request.decision_comment == "ok"
    assert Grant.objects.count() == 1
    assert not AuditEvent.objects.filter(action="request.denied").exists()


def test_second_approval_of_the_same_request_creates_no_second_grant(client, marc, otto, pending_request):
    client.force_login(otto)
    client.post(decide_url(pending_request), {"action": "approve", "comment": ""})
    client.force_login(marc)
    response = client.post(decide_url(pending_request), {"action": "approve", "comment": ""}, follow=True)
    assert "was already approved; nothing changed." in text(response)
    assert Grant.objects.count() == 1
    assert AuditEvent.objects.filter(action="request.approved").count() == 1


def test_approver_cannot_approve_own_request(client, marc, profile):
    own = lifecycle.submit_request(
        requester=marc, profile=profile, duration=datetime.timedelta(minutes=30), justification=JUSTIFICATION
    )
    client.force_login(marc)
    response = client.post(decide_url(own), {"action": "approve", "comment": ""})
    assert response.status_code == 403
    assert "You cannot decide your own request." in text(response)
    own.refresh_from_db()
    assert own.status == RS.PENDING
    assert not Grant.objects.exists()
    assert AuditEvent.objects.get(action="request.decision_refused").actor == marc


def test_requester_posting_approve_on_own_request_is_refused_and_audited(client, ana, pending_request):
    client.force_login(ana)
    response = client.post(decide_url(pending_request), {"action": "approve", "comment": "self-service"})
    assert response.status_code == 403
    assert "You cannot decide your own request." in text(response)
    pending_request.refresh_from_db()
    assert pending_request.status == RS.PENDING
    assert pending_request.decided_by is None
    assert not Grant.objects.exists()
    event = AuditEvent.objects.get(action="request.decision_refused")
    assert event.actor == ana
    assert event.object_id == str(pending_request.pk)
    assert event.details["attempted"] == "approved"


def test_outsider_posting_a_decision_gets_not_found_and_is_audited(client, eve, pending_request):
    client.force_login(eve)
    response = client.post(decide_url(pending_request), {"action": "approve", "comment": ""})
    assert response.status_code == 404
    page = text(response)
    assert "appdb read-only" not in page
    assert "Ana (ana)" not in page
    pending_request.refresh_from_db()
    assert pending_request.status == RS.PENDING
    assert not Grant.objects.exists()
    event = AuditEvent.objects.get(action="request.decision_refused")
    assert event.actor == eve
    assert event.details["reason"] == "You are not an approver for this request."


def test_approver_of_another_profile_posting_a_decision_gets_not_found(client, otto, rw_request):
    client.force_login(otto)
    response = client.post(decide_url(rw_request), {"action": "approve", "comment": ""})
    assert response.status_code == 404
    rw_request.refresh_from_db()
    assert rw_request.status == RS.PENDING
    assert AuditEvent.objects.get(action="request.decision_refused").actor == otto


def test_deciding_a_request_that_does_not_exist_gets_not_found(client, otto, db):
    client.force_login(otto)
    assert client.post(reverse("grants:request_decide", args=[999999]), {"action": "approve"}).status_code == 404


@pytest.mark.parametrize(
    "data",
    [{"action": "maybe"}, {}, {"action": "approve", "comment": "x" * 2001}],
    ids=["unknown", "missing", "long-comment"],
)
def test_a_decision_without_a_valid_action_or_comment_is_explained_and_changes_nothing(
    client, otto, pending_request, data
):
    client.force_login(otto)
    response = client.post(decide_url(pending_request), data, follow=True)
    assert "Choose Approve or Deny; a comment has at most 2,000 characters." in text(response)
    pending_request.refresh_from_db()
    assert pending_request.status == RS.PENDING
    assert not Grant.objects.exists()


def test_deciding_by_get_is_not_allowed(client, otto, pending_request):
    client.force_login(otto)
    assert client.get(decide_url(pending_request), {"action": "approve"}).status_code == 405
    pending_request.refresh_from_db()
    assert pending_request.status == RS.PENDING
