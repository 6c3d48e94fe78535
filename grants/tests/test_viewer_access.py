"""Who may see a request or a grant: one helper (selectors.request_for_viewer) for the pages and the API alike."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from accounts import tokens
from grants import lifecycle, selectors

from .conftest import JUSTIFICATION


@pytest.fixture
def audra(audra):
    """The auditor, with the right to see every request (the auditors group's, given here explicitly)."""
    audra.user_permissions.add(Permission.objects.get(codename="view_accessrequest"))
    return audra


def api_get(client, user, path):
    secret = tokens.create_token(actor=user, name="t", days=1)[1]
    return client.get("/api/v1" + path, headers={"Authorization": f"Bearer {secret}"})


# The helper ------------------------------------------------------------------------


def test_requester_approver_and_auditor_see_a_request_an_outsider_does_not(ana, otto, audra, eve, pending_request):
    for user in (ana, otto, audra):
        assert selectors.request_for_viewer(user, pending_request.pk) == pending_request, user
    assert selectors.request_for_viewer(eve, pending_request.pk) is None


def test_a_request_that_does_not_exist_looks_like_one_not_seen(ana, db):
    assert selectors.request_for_viewer(ana, 999999) is None
    assert selectors.grant_for_viewer(ana, 999999) is None


def test_a_grant_is_seen_by_whoever_sees_its_request(ana, otto, audra, eve, active_grant):
    for user in (ana, otto, audra):
        assert selectors.grant_for_viewer(user, active_grant.pk) == active_grant, user
    assert selectors.grant_for_viewer(eve, active_grant.pk) is None


def test_an_extension_leads_to_the_grant_it_extends(ana, active_grant):
    extension = lifecycle.request_extension(
        active_grant.pk, actor=ana, duration=active_grant.request.duration, justification=JUSTIFICATION
    )
    assert selectors.grant_of(extension) == active_grant
    assert selectors.grant_of(active_grant.request) == active_grant


# The pages and the API answer alike ------------------------------------------------


def test_pages_and_api_both_show_the_request_to_its_viewers_and_404_to_an_outsider(
    client, ana, otto, audra, eve, active_grant
):
    request_page = reverse("grants:request_detail", args=[active_grant.request_id])
    grant_page = reverse("grants:grant_detail", args=[active_grant.pk])
    for user in (ana, otto, audra):
        client.force_login(user)
        assert client.get(request_page).status_code == 200, user
        assert client.get(grant_page).status_code == 200, user
        assert api_get(client, user, f"/requests/{active_grant.request_id}").status_code == 200, user
    client.force_login(eve)
    assert client.get(request_page).status_code == 404
    assert client.get(grant_page).status_code == 404
    assert api_get(client, eve, f"/requests/{active_grant.request_id}").json()["code"] == "not_found"
