"""The request form at /access/request/: what it offers, what it refuses and what it records."""

import datetime

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from grants.models import AccessProfile, AccessRequest

from .conftest import JUSTIFICATION
from .support import form_data

URL = reverse("grants:request_new")


def text(response):
    return response.content.decode()


@pytest.fixture
def auditors_profile(target, groups):
    """A profile only auditors may request: never offered to ana."""
    p = AccessProfile.objects.create(
        name="appdb-audit", title="appdb audit reader", target=target, approver_group=groups["db-approvers"]
    )
    p.requestable_by.add(groups["auditors"])
    return p


@pytest.fixture
def disabled_profile(target, groups):
    p = AccessProfile.objects.create(
        name="appdb-legacy",
        title="appdb legacy admin",
        target=target,
        approver_group=groups["db-approvers"],
        enabled=False,
    )
    p.requestable_by.add(groups["engineers"])
    return p


# The page ------------------------------------------------------------------


def test_request_form_shows_labelled_fields_and_the_request_button(client, ana, profile):
    client.force_login(ana)
    response = client.get(URL)
    assert response.status_code == 200
    page = text(response)
    for label in ("Access profile", "Duration", "Justification", "Ticket"):
        assert f">{label}</label>" in page
    assert ">Request access</button>" in page


def test_request_form_offers_only_profiles_the_user_may_request(
    client, ana, profile, rw_profile, auditors_profile, disabled_profile
):
    client.force_login(ana)
    page = text(client.get(URL))
    assert f'<option value="{profile.pk}">appdb read-only</option>' in page
    assert f'<option value="{rw_profile.pk}">appdb read-write</option>' in page
    assert "appdb audit reader" not in page
    assert "appdb legacy admin" not in page


def test_outsider_is_told_there_is_nothing_to_request(client, eve, profile, rw_profile):
    client.force_login(eve)
    response = client.get(URL)
    assert response.status_code == 200
    page = text(response)
    assert "There is no access profile you may request." in page
    assert "appdb read-only" not in page
    assert ">Request access</button>" not in page


def test_profile_link_preselects_the_profile_and_its_default_duration(client, ana, profile):
    client.force_login(ana)
    page = text(client.get(URL, {"profile": profile.pk}))
    assert f'<option value="{profile.pk}" selected>appdb read-only</option>' in page
    assert 'value="1h"' in page


def test_anonymous_user_is_sent_to_the_login_page(client, profile):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))
    assert "next=/access/request/" in response["Location"]


def test_anonymous_post_creates_nothing(client, profile):
    response = client.post(URL, form_data(profile))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))
    assert not AccessRequest.objects.exists()


# Submitting ----------------------------------------------------------------


def test_valid_request_is_pending_redirects_to_its_page_and_is_audited(client, ana, profile):
    client.force_login(ana)
    response = client.post(URL, form_data(profile))
    req = AccessRequest.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("grants:request_detail", args=[req.pk])
    assert req.status == AccessRequest.Status.PENDING
    assert req.requester == ana
    assert req.profile == profile
    assert req.duration == datetime.timedelta(minutes=30)
    assert req.justification == JUSTIFICATION
    assert req.ticket == "INC-4711"
    event = AuditEvent.objects.get(action="request.submitted")
    assert event.actor == ana
    assert event.object_id == str(req.pk)

    page = text(client.get(response["Location"]))
    assert f"Request #{req.pk} sent to its approvers." in page
    assert "Pending" in page


def test_durations_in_hours_and_minutes_are_understood(client, ana, profile):
    client.force_login(ana)
    response = client.post(URL, form_data(profile, duration="1h30m"))
    assert response.status_code == 302
    assert AccessRequest.objects.get().duration == datetime.timedelta(hours=1, minutes=30)


def test_durations_written_with_min_are_understood(client, ana, profile):
    client.force_login(ana)
    response = client.post(URL, form_data(profile, duration="45min"))
    assert response.status_code == 302
    assert AccessRequest.objects.get().duration == datetime.timedelta(minutes=45)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("duration", "0m", "Choose a duration longer than zero."),
        ("duration", "-5m", "Write a duration such as 30m, 2h, 1h30m or 1d."),
        ("duration", "soon", "Write a duration such as 30m, 2h, 1h30m or 1d."),
        ("duration", "", "This field is required."),
        ("duration", "5h", "The longest this profile allows is 4 h."),
        # Twenty characters of digits: larger than any timedelta.
        ("duration", "9999999999999999999d", "Write a duration such as 30m, 2h, 1h30m or 1d."),
        ("justification", "", "This field is required."),
        ("justification", "   ", "This field is required."),
        ("justification", "need it", "Say why you need access in at least 20 characters."),
        ("justification", "x" * 2001, "Keep the justification under 2000 characters (it has 2001)."),
        ("ticket", "T" * 101, "Ensure this value has at most 100 characters (it has 101)."),
    ],
    ids=[
        "zero",
        "negative",
        "garbage",
        "empty-duration",
        "over-maximum",
        "huge",
        "missing-justification",
        "blank-justification",
        "short-justification",
        "overlong-justification",
        "overlong-ticket",
    ],
)
def test_bad_input_is_explained_on_the_page_and_creates_nothing(client, ana, profile, field, value, message):
    client.force_login(ana)
    response = client.post(URL, form_data(profile, **{field: value}))
    assert response.status_code == 200
    page = text(response)
    assert f'<div class="error" role="alert">{message}</div>' in page
    assert ">Request access</button>" in page
    assert not AccessRequest.objects.exists()
    assert not AuditEvent.objects.filter(action="request.submitted").exists()


def test_missing_profile_is_explained_on_the_page(client, ana, profile):
    client.force_login(ana)
    response = client.post(URL, form_data(profile, profile=""))
    assert response.status_code == 200
    assert "This field is required." in text(response)
    assert not AccessRequest.objects.exists()


def test_forged_profile_is_refused_on_the_page_and_audited(client, ana, profile, auditors_profile):
    client.force_login(ana)
    response = client.post(URL, form_data(auditors_profile))
    assert response.status_code == 200
    assert "You may not request this access profile." in text(response)
    assert not AccessRequest.objects.exists()
    event = AuditEvent.objects.get(action="request.refused")
    assert event.actor == ana
    assert event.object_type == "accessprofile"
    assert event.object_id == str(auditors_profile.pk)


def test_outsider_forging_a_post_gets_nothing_and_is_audited(client, eve, profile):
    client.force_login(eve)
    response = client.post(URL, form_data(profile))
    assert response.status_code == 200
    assert "There is no access profile you may request." in text(response)
    assert not AccessRequest.objects.exists()
    assert AuditEvent.objects.get(action="request.refused").actor == eve


def test_unknown_profile_is_explained_on_the_page(client, ana, profile):
    client.force_login(ana)
    response = client.post(URL, form_data(profile, profile=999999))
    assert response.status_code == 200
    assert "Pick one of the profiles listed." in text(response)
    assert not AccessRequest.objects.exists()


def test_disabled_profile_is_refused_on_the_page(client, ana, profile, disabled_profile):
    client.force_login(ana)
    response = client.post(URL, form_data(disabled_profile))
    assert response.status_code == 200
    assert "This access profile is disabled; pick another one." in text(response)
    assert not AccessRequest.objects.exists()


def test_second_identical_submission_is_refused_and_only_one_request_exists(client, ana, profile):
    client.force_login(ana)
    first = client.post(URL, form_data(profile))
    second = client.post(URL, form_data(profile))
    assert first.status_code == 302
    assert second.status_code == 200
    assert "You already have a pending request for appdb read-only." in text(second)
    assert AccessRequest.objects.count() == 1
    assert AuditEvent.objects.filter(action="request.submitted").count() == 1


def test_holder_of_an_active_grant_cannot_request_it_again(client, ana, active_grant):
    client.force_login(ana)
    response = client.post(URL, form_data(active_grant.profile))
    assert response.status_code == 200
    assert "You already hold appdb read-only; release it, extend it, or wait for it to end." in text(response)
    assert AccessRequest.objects.count() == 1


# The request's own page ------------------------------------------------------


def test_requester_sees_their_pending_request_and_a_cancel_button(client, ana, pending_request):
    client.force_login(ana)
    response = client.get(reverse("grants:request_detail", args=[pending_request.pk]))
    assert response.status_code == 200
    page = text(response)
    assert f"Request #{pending_request.pk}: appdb read-only" in page
    assert "Pending" in page
    assert JUSTIFICATION in page
    assert "Waiting for approval: Step 1 of 1: a member of db-approvers." in page
    assert ">Cancel request</button>" in page
    assert ">Approve</button>" not in page


def test_approver_sees_the_request_page_with_decision_buttons(client, otto, pending_request):
    client.force_login(otto)
    page = text(client.get(reverse("grants:request_detail", args=[pending_request.pk])))
    assert "Recent history of ana" in page
    assert ">Approve</button>" in page
    assert ">Deny</button>" in page
    assert ">Cancel request</button>" not in page


def test_outsider_gets_not_found_for_someone_elses_request_page(client, eve, pending_request):
    client.force_login(eve)
    response = client.get(reverse("grants:request_detail", args=[pending_request.pk]))
    assert response.status_code == 404
    page = text(response)
    assert JUSTIFICATION not in page
    assert "appdb read-only" not in page


def test_requester_cancels_their_pending_request(client, ana, pending_request):
    client.force_login(ana)
    response = client.post(reverse("grants:request_cancel", args=[pending_request.pk]), follow=True)
    assert response.status_code == 200
    page = text(response)
    assert f"Request #{pending_request.pk} cancelled." in page
    assert ">Cancel request</button>" not in page
    pending_request.refresh_from_db()
    assert pending_request.status == AccessRequest.Status.CANCELLED
    assert AuditEvent.objects.get(action="request.cancelled").actor == ana


def test_cancelling_a_decided_request_warns_and_changes_nothing(client, ana, approved_request):
    client.force_login(ana)
    response = client.post(reverse("grants:request_cancel", args=[approved_request.pk]), follow=True)
    assert "This request is no longer pending; nothing changed." in text(response)
    approved_request.refresh_from_db()
    assert approved_request.status == AccessRequest.Status.APPROVED


def test_approver_cannot_cancel_someone_elses_request(client, otto, pending_request):
    client.force_login(otto)
    response = client.post(reverse("grants:request_cancel", args=[pending_request.pk]))
    assert response.status_code == 403
    assert "Only the requester can cancel a request." in text(response)
    pending_request.refresh_from_db()
    assert pending_request.status == AccessRequest.Status.PENDING


def test_outsider_cannot_cancel_someone_elses_request(client, eve, pending_request):
    client.force_login(eve)
    response = client.post(reverse("grants:request_cancel", args=[pending_request.pk]))
    assert response.status_code == 404
    pending_request.refresh_from_db()
    assert pending_request.status == AccessRequest.Status.PENDING
    assert not AuditEvent.objects.filter(action="request.cancelled").exists()
