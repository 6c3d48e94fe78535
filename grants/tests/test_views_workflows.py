"""Pages for scheduled windows, bundles, break-glass, multi-step approval, extensions and reviews."""

import datetime
import zoneinfo

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import dateformat, timezone

from audit.models import AuditEvent
from grants import lifecycle
from grants.models import AccessProfile, AccessRequest, Approval, BreakGlassReview, Grant, Policy

from .conftest import JUSTIFICATION

H = datetime.timedelta(hours=1)
RS = AccessRequest.Status
NEW = reverse("grants:request_new")
MY_ACCESS = reverse("grants:my_access")
INBOX = reverse("grants:inbox")
REVIEWS = reverse("grants:reviews")
BREAK_GLASS_HELP = "Emergency only: access is granted at once without approval, flagged, and reviewed afterwards"
EMERGENCY = "Production is down: the orders table is locked"


def text(response):
    return response.content.decode()


def shown(value):
    return dateformat.format(timezone.localtime(value), "Y-m-d H:i:s T")


def form_data(chosen, **overrides):
    data = {"profile": chosen.pk, "duration": "30m", "justification": JUSTIFICATION, "ticket": "INC-4711"}
    data.update(overrides)
    return data


def detail_url(req):
    return reverse("grants:request_detail", args=[req.pk])


def decide_url(req):
    return reverse("grants:request_decide", args=[req.pk])


def extend_url(grant):
    return reverse("grants:grant_extend", args=[grant.pk])


def close_url(review):
    return reverse("grants:review_close", args=[review.pk])


@pytest.fixture
def more_dbs(target, groups):
    """Two more read-only profiles approved by db-approvers, to bundle with `profile`."""
    made = []
    for n in (2, 3):
        p = AccessProfile.objects.create(
            name=f"appdb{n}-readonly",
            title=f"appdb{n} read-only",
            target=target,
            scope={"roles": ["app_readonly"]},
            max_duration=4 * H,
            approver_group=groups["db-approvers"],
        )
        p.requestable_by.add(groups["engineers"])
        made.append(p)
    return made


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


# The request form: Start, Also request, Break-glass ----------------------------------


def test_request_form_offers_a_labelled_start_and_also_request_but_no_break_glass_to_most(
    client, ana, profile, more_dbs
):
    client.force_login(ana)
    page = text(client.get(NEW))
    assert ">Start</label>" in page
    assert 'type="datetime-local"' in page
    assert "Leave empty to start as soon as approved; set it for a maintenance window (times in UTC)." in page
    assert "<legend>Also request</legend>" in page
    for p in more_dbs:
        assert f'type="checkbox" name="also" value="{p.pk}"' in page
        assert f"{p.title}</label>" in page
    assert "Break-glass" not in page
    assert ">Request access</button>" in page


def test_break_glass_checkbox_is_offered_only_to_its_groups(client, ana, marc, glass):
    client.force_login(ana)
    page = text(client.get(NEW))
    assert ">Break-glass</label>" in page
    assert 'type="checkbox" name="break_glass"' in page
    assert BREAK_GLASS_HELP in page

    client.force_login(marc)
    assert "Break-glass" not in text(client.get(NEW))


def test_start_is_passed_as_the_window_start_in_utc_by_default(client, ana, profile):
    start = (timezone.now() + datetime.timedelta(days=2)).astimezone(datetime.UTC).replace(second=0, microsecond=0)
    client.force_login(ana)
    response = client.post(NEW, form_data(profile, starts_at=start.strftime("%Y-%m-%dT%H:%M")))
    assert response.status_code == 302
    req = AccessRequest.objects.get()
    assert req.starts_at == start
    assert req.status == RS.PENDING


def test_start_is_read_in_the_portals_time_zone(client, ana, profile, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    start = (timezone.now() + datetime.timedelta(days=3)).astimezone(berlin).replace(second=0, microsecond=0)
    client.force_login(ana)
    page = text(client.get(NEW))
    assert "(times in Europe/Berlin)" in page
    client.post(NEW, form_data(profile, starts_at=start.strftime("%Y-%m-%dT%H:%M")))
    assert AccessRequest.objects.get().starts_at == start


def test_start_in_the_past_is_explained_under_the_start_field(client, ana, profile):
    past = (timezone.now() - datetime.timedelta(days=1)).astimezone(datetime.UTC)
    client.force_login(ana)
    response = client.post(NEW, form_data(profile, starts_at=past.strftime("%Y-%m-%dT%H:%M")))
    assert response.status_code == 200
    page = text(response)
    error = "The window&#x27;s start is in the past; leave it empty to start as soon as approved."
    assert page.index(">Start</label>") < page.index(error) < page.index(">Request access</button>")
    assert not AccessRequest.objects.exists()


def test_start_that_is_not_a_date_is_explained(client, ana, profile):
    client.force_login(ana)
    response = client.post(NEW, form_data(profile, starts_at="tomorrow"))
    assert response.status_code == 200
    assert "Enter a valid date/time." in text(response)
    assert not AccessRequest.objects.exists()


def test_also_request_makes_a_bundle_and_the_message_names_every_request(client, ana, profile, more_dbs):
    client.force_login(ana)
    response = client.post(NEW, form_data(profile, also=[p.pk for p in more_dbs]), follow=True)
    reqs = list(AccessRequest.objects.order_by("pk"))
    assert [r.profile for r in reqs] == [profile, *more_dbs]
    assert len({r.bundle for r in reqs}) == 1 and reqs[0].bundle is not None
    assert {(r.duration, r.justification, r.ticket, r.status) for r in reqs} == {
        (datetime.timedelta(minutes=30), JUSTIFICATION, "INC-4711", RS.PENDING)
    }
    assert response.redirect_chain == [(detail_url(reqs[0]), 302)]
    page = text(response)
    assert f"Requests #{reqs[0].pk}, #{reqs[1].pk} and #{reqs[2].pk} sent to their approvers." in page
    assert "Part of a bundle with: appdb2 read-only" in page
    assert "appdb3 read-only" in page


def test_ticking_the_chosen_profile_again_makes_no_bundle(client, ana, profile, more_dbs):
    client.force_login(ana)
    client.post(NEW, form_data(profile, also=[profile.pk]))
    req = AccessRequest.objects.get()
    assert req.bundle is None


def test_a_bundle_with_a_profile_one_may_not_request_creates_nothing(client, ana, profile, more_dbs, target, groups):
    forbidden = AccessProfile.objects.create(
        name="audit-only", title="audit only", target=target, approver_group=groups["db-approvers"]
    )
    forbidden.requestable_by.add(groups["auditors"])
    client.force_login(ana)
    response = client.post(NEW, form_data(profile, also=[more_dbs[0].pk, forbidden.pk]))
    assert response.status_code == 200
    assert "You may not request audit only." in text(response)
    assert f'value="{forbidden.pk}"' not in text(response)  # never offered
    assert not AccessRequest.objects.exists()


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


# Request again ------------------------------------------------------------------


def test_request_again_fills_the_form_from_ones_own_request(client, ana, profile, rw_profile):
    earlier = lifecycle.submit_request(
        requester=ana,
        profile=rw_profile,
        duration=datetime.timedelta(hours=1, minutes=30),
        justification=JUSTIFICATION,
        ticket="INC-77",
    )
    client.force_login(ana)
    page = text(client.get(NEW, {"again": earlier.pk}))
    assert f'<option value="{rw_profile.pk}" selected>appdb read-write</option>' in page
    assert 'value="1h30m"' in page
    assert f">\n{JUSTIFICATION}</textarea>" in page
    assert 'value="INC-77"' in page


def test_request_again_ignores_someone_elses_request(client, marc, pending_request):
    client.force_login(marc)
    response = client.get(NEW, {"again": pending_request.pk})
    assert response.status_code == 200
    page = text(response)
    assert JUSTIFICATION not in page
    assert "INC-4711" not in page
    assert " selected>appdb read-only" not in page


def test_request_again_with_garbage_or_unknown_ids_shows_an_empty_form(client, ana, profile):
    client.force_login(ana)
    for again in ("abc", "999999", ""):
        response = client.get(NEW, {"again": again})
        assert response.status_code == 200
        assert JUSTIFICATION not in text(response)


def test_my_requests_and_my_own_request_page_link_to_request_again(client, ana, otto, pending_request):
    link = f'href="{NEW}?again={pending_request.pk}">Request again</a>'
    client.force_login(ana)
    assert link in text(client.get(MY_ACCESS))
    assert link in text(client.get(detail_url(pending_request)))
    client.force_login(otto)
    assert "Request again" not in text(client.get(detail_url(pending_request)))


# Steps, approvals, bundles and extensions in the inbox and on the request page -----------


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


def test_bundle_is_shown_in_the_inbox_and_one_decision_approves_all_of_it(client, ana, otto, profile, more_dbs):
    reqs = lifecycle.submit_bundle(
        requester=ana, profiles=[profile, *more_dbs], duration=H, justification=JUSTIFICATION
    )
    client.force_login(otto)
    page = text(client.get(INBOX))
    assert (
        f'Part of a bundle with: appdb2 read-only (<a href="{detail_url(reqs[1])}">#{reqs[1].pk}</a>), '
        f'appdb3 read-only (<a href="{detail_url(reqs[2])}">#{reqs[2].pk}</a>). A decision on this request '
        "applies to all of them."
    ) in page
    assert "Approve or Deny decides the whole bundle (3 requests)." in page

    response = client.post(
        decide_url(reqs[0]), {"action": "approve", "comment": "all three", "step": "0", "next": "inbox"}, follow=True
    )
    assert set(AccessRequest.objects.values_list("status", flat=True)) == {RS.APPROVED}
    assert Grant.objects.count() == 3
    page = text(response)
    assert f"Request #{reqs[0].pk} approved. The decision applies to the other requests of its bundle too." in page
    assert "Nothing waits for your decision." in page


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


# Extending from My access ----------------------------------------------------------


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


# Break-glass: flags and reviews -----------------------------------------------------


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


def test_a_forged_bundle_member_is_audited(client, ana, profile, more_dbs, target, groups):
    forbidden = AccessProfile.objects.create(
        name="audit-only", title="audit only", target=target, approver_group=groups["db-approvers"]
    )
    forbidden.requestable_by.add(groups["auditors"])
    client.force_login(ana)
    client.post(NEW, form_data(profile, also=[more_dbs[0].pk, forbidden.pk]))
    assert AuditEvent.objects.filter(action="request.refused", actor=ana).exists()
