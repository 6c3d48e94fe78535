"""My access at /access/: live grants, releasing, and how a grant ended (credentials: test_credentials.py)."""

from django.urls import reverse
from django.utils import dateformat, timezone

from audit.models import AuditEvent
from grants import lifecycle
from grants.models import Grant

URL = reverse("grants:my_access")
GS = Grant.Status


def text(response):
    return response.content.decode()


def release_url(grant):
    return reverse("grants:grant_release", args=[grant.pk])


def shown(value):
    return dateformat.format(timezone.localtime(value), "Y-m-d H:i:s.u T")


# The page ------------------------------------------------------------------


def test_user_without_access_is_offered_to_request_some(client, eve):
    client.force_login(eve)
    response = client.get(URL)
    assert response.status_code == 200
    page = text(response)
    assert "You hold no access right now." in page
    assert "You have not asked for access yet." in page


def test_holder_sees_the_active_grant_with_time_left_and_its_buttons(client, ana, active_grant):
    client.force_login(ana)
    response = client.get(URL)
    assert response.status_code == 200
    page = text(response)
    assert "appdb read-only <small>on appdb-cluster</small>" in page
    assert "Time left:" in page
    assert f'data-expires="{active_grant.expires_at.isoformat()}"' in page
    assert ">Show credentials</button>" in page
    assert ">Release now</button>" in page


def test_approved_grant_waiting_for_provisioning_is_shown_as_being_set_up(client, ana, approved_request):
    client.force_login(ana)
    page = text(client.get(URL))
    assert "Approved; being set up on the target" in page
    assert ">Show credentials</button>" not in page


def test_another_users_grant_is_not_on_my_access(client, marc, active_grant):
    client.force_login(marc)
    page = text(client.get(URL))
    assert "You hold no access right now." in page
    assert ">Show credentials</button>" not in page


def test_anonymous_user_is_sent_to_the_login_page_from_my_access(client, db):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


# Releasing -----------------------------------------------------------------


def test_holder_releases_the_grant_and_its_revocation_is_enqueued(
    client, ana, active_grant, django_capture_on_commit_callbacks
):
    client.force_login(ana)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(release_url(active_grant))
    assert response.status_code == 302
    assert response["Location"] == URL
    assert len(callbacks) == 1
    active_grant.refresh_from_db()
    assert active_grant.status == GS.REVOKING
    assert active_grant.end_reason == Grant.EndReason.RELEASED
    assert active_grant.ended_by == ana
    assert active_grant.sealed_credentials == ""
    event = AuditEvent.objects.get(action="grant.revoke_requested")
    assert event.actor == ana
    assert event.details["reason"] == "released"

    page = text(client.get(URL))
    assert "Releasing appdb read-only: the access is being removed from appdb-cluster." in page
    assert "Ending (released by the holder): being removed from the target" in page
    assert ">Release now</button>" not in page


def test_releasing_twice_warns_and_changes_nothing(client, ana, active_grant):
    client.force_login(ana)
    client.post(release_url(active_grant))
    response = client.post(release_url(active_grant), follow=True)
    assert "This access is already ending; nothing changed." in text(response)
    assert AuditEvent.objects.filter(action="grant.revoke_requested").count() == 1


def test_approver_cannot_release_someone_elses_grant(client, otto, active_grant):
    client.force_login(otto)
    response = client.post(release_url(active_grant))
    assert response.status_code == 403
    assert "Only the holder can release a grant." in text(response)
    active_grant.refresh_from_db()
    assert active_grant.status == GS.ACTIVE
    assert active_grant.end_reason == ""
    assert AuditEvent.objects.get(action="grant.revoke_refused").actor == otto


def test_outsider_cannot_release_someone_elses_grant(client, eve, active_grant):
    client.force_login(eve)
    response = client.post(release_url(active_grant))
    assert response.status_code == 404
    active_grant.refresh_from_db()
    assert active_grant.status == GS.ACTIVE


# How it ended --------------------------------------------------------------


def test_grant_page_after_release_shows_how_it_ended_and_when_it_was_confirmed_gone(client, ana, active_grant):
    client.force_login(ana)
    client.post(release_url(active_grant))
    lifecycle.complete_revocation(active_grant.pk)
    active_grant.refresh_from_db()
    assert active_grant.status == GS.REVOKED

    response = client.get(reverse("grants:grant_detail", args=[active_grant.pk]))
    assert response.status_code == 200
    page = text(response)
    assert "Revoked" in page
    assert "<dt>How it ended</dt><dd>Released by the holder (Ana (ana))" in page
    assert f"<dt>Revoked on the target</dt><dd>{shown(active_grant.revoked_at)}</dd>" in page
    assert f"<dt>Confirmed gone</dt><dd>{shown(active_grant.verified_at)} (the target was read again" in page

    page = text(client.get(URL))
    assert "You hold no access right now." in page
    assert "Released by the holder" in page


def test_outsider_gets_not_found_for_someone_elses_grant_page(client, eve, active_grant):
    client.force_login(eve)
    assert client.get(reverse("grants:grant_detail", args=[active_grant.pk])).status_code == 404
