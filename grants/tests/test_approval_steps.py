"""Multi-step approval on the pages: the inbox and the request page show the current step and the approvals so far.

The steps' rules through the lifecycle are in test_policy.py.
"""

import datetime

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from audit.models import AuditEvent
from grants import lifecycle
from grants.models import AccessRequest, Approval, Policy

from .conftest import JUSTIFICATION
from .support import detail_url

H = datetime.timedelta(hours=1)
RS = AccessRequest.Status
INBOX = reverse("grants:inbox")


def text(response):
    return response.content.decode()


def decide_url(req):
    return reverse("grants:request_decide", args=[req.pk])


@pytest.fixture
def three_steps(profile, groups, django_user_model):
    """db-approvers, then two people of security, then an auditor."""
    security = Group.objects.create(name="security")
    profile.policy = Policy.objects.create(
        name="three-steps",
        steps=[{"group": "db-approvers"}, {"group": "security", "count": 2}, {"group": "auditors"}],
    )
    profile.save()
    users = {}
    for name in ("sec1", "sec2"):
        users[name] = django_user_model.objects.create_user(name, first_name=name.capitalize())
        users[name].groups.add(security)
    return users


# Pages: the inbox and the request page -------------------------------------------------------------


@pytest.fixture
def at_step_two(ana, otto, profile, three_steps):
    req = lifecycle.submit_request(requester=ana, profile=profile, duration=H, justification=JUSTIFICATION)
    lifecycle.approve_request(req.pk, actor=otto, comment="checked the ticket", step=0)
    req.refresh_from_db()
    assert req.step == 1
    return req


def test_inbox_shows_the_current_step_the_approvals_so_far_and_the_step_it_decides(client, at_step_two, three_steps):
    client.force_login(three_steps["sec1"])
    page = text(client.get(INBOX))
    assert f"#{at_step_two.pk}</a>: Ana (ana) asks for appdb read-only" in page
    assert "Step 2 of 3: 2 × a member of security" in page
    assert "Step 1: Otto (otto) at" in page
    assert "“checked the ticket”" in page
    assert '<input type="hidden" name="step" value="1">' in page


def test_request_page_shows_the_step_and_approvals_to_the_requester(client, ana, at_step_two):
    client.force_login(ana)
    page = text(client.get(detail_url(at_step_two)))
    assert "Waiting for approval: Step 2 of 3: 2 × a member of security." in page
    assert "Step 1: Otto (otto) at" in page
    assert ">Approve</button>" not in page


def test_approving_a_step_passes_the_step_and_says_what_comes_next(client, at_step_two, three_steps):
    client.force_login(three_steps["sec1"])
    response = client.post(
        decide_url(at_step_two), {"action": "approve", "comment": "fine", "step": "1", "next": "inbox"}, follow=True
    )
    assert response.redirect_chain == [(INBOX, 302)]
    assert Approval.objects.filter(request=at_step_two, step=1, approver=three_steps["sec1"], comment="fine").exists()
    at_step_two.refresh_from_db()
    assert at_step_two.status == RS.PENDING and at_step_two.step == 1
    assert (
        f"Your approval of request #{at_step_two.pk} is recorded; it now waits for step 2 of 3: 2 × a member "
        "of security." in text(response)
    )


def test_a_decision_on_a_step_that_moved_on_is_a_warning_and_changes_nothing(client, at_step_two, three_steps):
    client.force_login(three_steps["sec1"])
    response = client.post(decide_url(at_step_two), {"action": "deny", "comment": "", "step": "0"}, follow=True)
    assert response.status_code == 200
    assert (
        f'<li class="warning" role="status">Request #{at_step_two.pk} has moved on to step 2 since you looked; '
        "nothing changed.</li>" in text(response)
    )
    at_step_two.refresh_from_db()
    assert at_step_two.status == RS.PENDING
    assert not Approval.objects.filter(approver=three_steps["sec1"]).exists()


def test_a_request_whose_policy_lost_its_current_step_is_shown_and_approved_at_the_last_step(
    client, at_step_two, three_steps, profile, groups, django_user_model
):
    for name in ("sec1", "sec2"):
        lifecycle.approve_request(at_step_two.pk, actor=three_steps[name])
    audra = django_user_model.objects.create_user("audra", first_name="Audra")
    audra.groups.add(groups["auditors"])
    # `catalog apply` of a file that dropped the security step: the request waited for step 3 of 3.
    profile.policy.steps = [{"group": "db-approvers"}, {"group": "auditors"}]
    profile.policy.save()
    client.force_login(audra)
    page = text(client.get(detail_url(at_step_two)))
    assert "Step 2 of 2: a member of auditors" in page
    response = client.post(decide_url(at_step_two), {"action": "approve", "comment": "", "step": "2"}, follow=True)
    assert response.status_code == 200
    assert f"Request #{at_step_two.pk} approved." in text(response)
    at_step_two.refresh_from_db()
    assert at_step_two.status == RS.APPROVED and at_step_two.decided_by == audra


def test_a_stale_approval_by_someone_not_in_the_next_step_is_a_warning_not_a_refusal(client, marc, at_step_two):
    client.force_login(marc)  # db-approvers: step 1 was theirs, step 2 is security's
    response = client.post(decide_url(at_step_two), {"action": "approve", "comment": "", "step": "0"}, follow=True)
    assert response.status_code == 200
    assert "has moved on to step 2 since you looked; nothing changed." in text(response)
    assert not Approval.objects.filter(approver=marc).exists()
    assert not AuditEvent.objects.filter(action="request.decision_refused").exists()  # a stale page is not an attack


def test_approving_the_wrong_step_without_a_stale_page_is_still_refused(client, marc, at_step_two):
    client.force_login(marc)
    response = client.post(decide_url(at_step_two), {"action": "approve", "comment": "", "step": "1"})
    assert response.status_code == 403
    assert "which you may not approve" in text(response)
