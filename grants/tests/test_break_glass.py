"""Break-glass: access granted at once without approval, flagged, announced, and reviewed afterwards.

Lifecycle, pages (the request form's box, the flags, the reviews page) and notifications. The API has no
break-glass call of its own: a request's `break_glass` is only read there.
"""

import datetime

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import dateformat, timezone

from audit.models import AuditEvent
from grants import lifecycle, selectors
from grants.models import AccessRequest, BreakGlassReview, Grant, Policy
from notifications.tests.support import PORTAL

from .conftest import JUSTIFICATION
from .support import detail_url, form_data

H = datetime.timedelta(hours=1)
RS = AccessRequest.Status
NEW = reverse("grants:request_new")
MY_ACCESS = reverse("grants:my_access")
REVIEWS = reverse("grants:reviews")
BREAK_GLASS_HELP = "Emergency only: access is granted at once without approval, flagged, and reviewed afterwards"
EMERGENCY = "Production is down: the orders table is locked"


def text(response):
    return response.content.decode()


def shown(value):
    return dateformat.format(timezone.localtime(value), "Y-m-d H:i:s T")


def close_url(review):
    return reverse("grants:review_close", args=[review.pk])


@pytest.fixture
def glass(profile, ana):
    """ana is on call (sre-oncall) and may break the glass on `profile`; db-approvers review."""
    profile.policy = Policy.objects.create(
        name="glass", steps=[{"group": "db-approvers"}], break_glass_groups=["sre-oncall"]
    )
    profile.save()
    ana.groups.add(Group.objects.create(name="sre-oncall"))
    return profile


@pytest.fixture
def broken_glass(glass, ana):
    """ana has used break-glass on `profile`; the grant is active and the review open."""
    req = lifecycle.submit_request(
        requester=ana, profile=glass, duration=H, justification=EMERGENCY, ticket="INC-9", break_glass=True
    )
    req = AccessRequest.objects.get(pk=req.pk)  # the lifecycle's copy knows nothing of its grant
    lifecycle.provision_grant(req.grant.pk)
    return req


# Lifecycle ----------------------------------------------------------------------------------------


def test_break_glass_grants_at_once_flags_it_and_opens_a_review(ana, otto, glass):
    req = lifecycle.submit_request(
        requester=ana,
        profile=glass,
        duration=H,
        justification="Production is down, orders table locked",
        break_glass=True,
    )
    req.refresh_from_db()
    assert req.status == "approved" and req.break_glass and req.auto_rule == "break-glass"
    grant = lifecycle.provision_grant(req.grant.pk)
    assert grant.status == "active"
    assert AuditEvent.objects.filter(action="request.break_glass", object_id=str(req.pk)).exists()
    assert [r.request for r in selectors.open_reviews(otto)] == [req]
    with pytest.raises(lifecycle.NotAllowedError):
        lifecycle.close_review(req.review.pk, actor=ana, comment="I reviewed myself, all good")
    with pytest.raises(lifecycle.InvalidRequestError):
        lifecycle.close_review(req.review.pk, actor=otto, comment="ok")
    lifecycle.close_review(req.review.pk, actor=otto, comment="Checked the session log: only the lock was killed.")
    assert selectors.open_reviews(otto) == []
    assert AuditEvent.objects.filter(action="review.closed", actor=otto).exists()


def test_break_glass_is_only_for_its_groups(marc, glass):
    with pytest.raises(lifecycle.NotAllowedError):
        lifecycle.submit_request(
            requester=marc, profile=glass, duration=H, justification=JUSTIFICATION, break_glass=True
        )
    assert not AccessRequest.objects.exists()
    assert AuditEvent.objects.filter(action="request.break_glass_refused", actor=marc).exists()


# Pages: the request form --------------------------------------------------------------------------


def test_break_glass_checkbox_is_offered_only_to_its_groups(client, ana, marc, glass):
    client.force_login(ana)
    page = text(client.get(NEW))
    assert ">Break-glass</label>" in page
    assert 'type="checkbox" name="break_glass"' in page
    assert BREAK_GLASS_HELP in page

    client.force_login(marc)
    assert "Break-glass" not in text(client.get(NEW))


def test_break_glass_grants_at_once_and_the_message_says_so(client, ana, glass):
    client.force_login(ana)
    response = client.post(NEW, form_data(glass, justification=EMERGENCY, break_glass="on"), follow=True)
    req = AccessRequest.objects.get()
    assert req.status == RS.APPROVED
    assert req.break_glass and req.auto_rule == "break-glass"
    assert Grant.objects.filter(request=req).exists()
    assert BreakGlassReview.objects.filter(request=req, closed_at=None).exists()
    page = text(response)
    assert f"Break-glass: request #{req.pk} granted at once, without approval." in page
    assert '<span class="badge bad">Break-glass</span>' in page
    assert "Open: waiting for an approver to review this break-glass use" in page


def test_break_glass_on_a_profile_outside_its_groups_is_refused_on_the_page_and_audited(client, ana, glass, rw_profile):
    client.force_login(ana)
    response = client.post(NEW, form_data(rw_profile, break_glass="on"))
    assert response.status_code == 200
    assert "You may not use break-glass access for this profile." in text(response)
    assert not AccessRequest.objects.exists()
    assert AuditEvent.objects.get(action="request.break_glass_refused").actor == ana


def test_a_forged_break_glass_box_from_someone_not_offered_it_is_ignored(client, marc, glass):
    client.force_login(marc)
    response = client.post(NEW, form_data(glass, break_glass="on"))
    assert response.status_code == 302
    req = AccessRequest.objects.get()
    assert req.break_glass is False
    assert req.status == RS.PENDING
    assert not Grant.objects.exists()


# Pages: flags and reviews -------------------------------------------------------------------------


def test_break_glass_access_is_flagged_on_my_access_and_on_the_grant_page(client, ana, broken_glass):
    client.force_login(ana)
    badge = '<span class="badge bad">Break-glass</span>'
    page = text(client.get(MY_ACCESS))
    assert f"{badge} <small>Granted without approval; an approver reviews this use.</small>" in page
    assert f"appdb read-only {badge}" in page  # the requests table
    page = text(client.get(reverse("grants:grant_detail", args=[broken_glass.grant.pk])))
    assert f"appdb read-only {badge}</h1>" in page
    assert "approved by break-glass (no approval; reviewed afterwards)" in page


def test_everyone_signed_in_has_the_reviews_link_and_outsiders_see_nothing_to_review(client, eve, broken_glass):
    client.force_login(eve)
    response = client.get(REVIEWS)
    assert response.status_code == 200
    page = text(response)
    assert f'<a href="{REVIEWS}">Reviews</a>' in page
    assert "No break-glass use waits for your review." in page
    assert EMERGENCY not in page


def test_the_requester_does_not_see_their_own_review(client, ana, broken_glass):
    client.force_login(ana)
    assert "No break-glass use waits for your review." in text(client.get(REVIEWS))


def test_an_approver_sees_the_open_review_with_what_happened_and_a_labelled_form(client, otto, broken_glass):
    review = broken_glass.review
    grant = Grant.objects.get(request=broken_glass)
    client.force_login(otto)
    page = text(client.get(REVIEWS))
    assert "Ana (ana) took appdb read-only" in page
    assert "<dt>Who</dt><dd>Ana (ana)</dd>" in page
    assert "<dt>Profile</dt><dd>appdb read-only on appdb-cluster</dd>" in page
    assert shown(broken_glass.created_at) in page
    assert EMERGENCY in page
    assert f"Grant #{grant.pk}</a>: Active, until {shown(grant.expires_at)}" in page
    assert f'action="{close_url(review)}"' in page
    assert f'<label for="review-comment-{review.pk}">Comment</label>' in page
    assert ">Close review</button>" in page


def test_an_approver_closes_the_review_with_a_comment(client, otto, broken_glass):
    client.force_login(otto)
    response = client.post(
        close_url(broken_glass.review), {"comment": "Checked the session log: only the lock was killed."}, follow=True
    )
    assert response.redirect_chain == [(REVIEWS, 302)]
    review = BreakGlassReview.objects.get(pk=broken_glass.review.pk)
    assert review.closed_by == otto
    assert review.closed_at is not None
    assert review.comment == "Checked the session log: only the lock was killed."
    assert AuditEvent.objects.get(action="review.closed").actor == otto
    page = text(response)
    assert f"Review of break-glass request #{broken_glass.pk} closed." in page
    assert "No break-glass use waits for your review." in page

    page = text(client.get(detail_url(broken_glass)))
    assert "Closed by Otto (otto) at" in page
    assert "Checked the session log: only the lock was killed." in page


def test_a_review_comment_that_says_nothing_is_explained_and_the_review_stays_open(client, otto, broken_glass):
    client.force_login(otto)
    response = client.post(close_url(broken_glass.review), {"comment": "ok"}, follow=True)
    assert '<li class="error" role="status">Comment: Say what you checked, in at least 10 characters.</li>' in text(
        response
    )
    assert BreakGlassReview.objects.get(pk=broken_glass.review.pk).closed_at is None


def test_closing_a_closed_review_is_a_warning(client, otto, marc, broken_glass):
    lifecycle.close_review(broken_glass.review.pk, actor=otto, comment="Checked the session log, all fine.")
    client.force_login(marc)
    response = client.post(close_url(broken_glass.review), {"comment": "I looked at it too, all fine."}, follow=True)
    assert "This review is already closed." in text(response)
    assert BreakGlassReview.objects.get(pk=broken_glass.review.pk).closed_by == otto


def test_the_requester_cannot_close_their_own_review(client, ana, broken_glass):
    client.force_login(ana)
    response = client.post(close_url(broken_glass.review), {"comment": "I reviewed myself, all good"})
    assert response.status_code == 403
    assert "You cannot review your own break-glass use." in text(response)
    assert BreakGlassReview.objects.get(pk=broken_glass.review.pk).closed_at is None
    assert AuditEvent.objects.get(action="review.close_refused").actor == ana


def test_an_outsider_cannot_close_a_review(client, eve, broken_glass):
    client.force_login(eve)
    response = client.post(close_url(broken_glass.review), {"comment": "Looks fine to me, honestly"})
    # Like a decision: someone who may not see the request learns nothing, not even that the review exists.
    assert response.status_code == 404
    assert BreakGlassReview.objects.get(pk=broken_glass.review.pk).closed_at is None
    assert AuditEvent.objects.get(action="review.close_refused").actor == eve


def test_reviews_need_a_signed_in_user_and_closing_needs_post(client, otto, broken_glass):
    response = client.get(REVIEWS)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))
    assert (
        client.post(close_url(broken_glass.review), {"comment": "Checked the session log, all fine."}).status_code
        == 302
    )
    client.force_login(otto)
    assert client.get(close_url(broken_glass.review)).status_code == 405
    assert BreakGlassReview.objects.get(pk=broken_glass.review.pk).closed_at is None


# Notifications ------------------------------------------------------------------------------------


def test_break_glass_emails_the_profiles_approvers(
    ana, otto, marc, glass, mailoutbox, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr("django_q.conf.Conf.SYNC", True)  # run the enqueued task in this process
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.submit_request(
            requester=ana,
            profile=glass,
            duration=H,
            justification="Production is down, orders table locked",
            break_glass=True,
        )
    sent = [m for m in mailoutbox if "Break-glass" in m.subject]
    # One message per approver: nobody sees the others' addresses.
    assert sorted(m.to for m in sent) == [["marc@example.com"], ["otto@example.com"]]
    assert all("Production is down" in m.body and "/access/reviews/" in m.body for m in sent)


def test_the_security_address_hears_every_break_glass_use(portal, smtp, run, settings, ana, otto, profile):
    settings.SECURITY_EMAIL = ["security@example.com"]
    profile.policy = Policy.objects.create(
        name="glass", steps=[{"group": "db-approvers"}], break_glass_groups=["engineers"]
    )
    profile.save()
    run(
        lifecycle.submit_request,
        requester=ana,
        profile=profile,
        duration=datetime.timedelta(minutes=30),
        justification=JUSTIFICATION,
        ticket="INC-4711",
        break_glass=True,
    )
    (mail,) = smtp.to("security@example.com")
    assert mail.subject == "[jitportal] Break-glass: ana on appdb read-only"
    assert JUSTIFICATION in mail.body and f"{PORTAL}/access/reviews/" in mail.body
