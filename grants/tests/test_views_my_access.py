"""My access at /access/: live grants, credentials shown once, releasing, and how a grant ended."""

from django.urls import reverse
from django.utils import dateformat, timezone
from django.utils.html import escape

from audit.models import AuditEvent
from grants import lifecycle, sealing
from grants.models import Grant

URL = reverse("grants:my_access")
GS = Grant.Status


def text(response):
    return response.content.decode()


def credentials_url(grant):
    return reverse("grants:grant_credentials", args=[grant.pk])


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


# Credentials ---------------------------------------------------------------


def test_holder_sees_the_credentials_once_on_an_uncached_page(client, ana, active_grant):
    expected = sealing.unseal(active_grant.sealed_credentials)
    client.force_login(ana)
    response = client.post(credentials_url(active_grant))
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    page = text(response)
    assert "Shown once." in page
    for key in ("username", "password", "dsn"):
        assert f"<dt>{key.capitalize()}</dt><dd><code>{escape(expected[key])}</code></dd>" in page
    assert expected["username"] == active_grant.external_ref

    active_grant.refresh_from_db()
    assert active_grant.sealed_credentials == ""
    assert active_grant.credentials_seen_at is not None
    assert AuditEvent.objects.get(action="grant.credentials_viewed").actor == ana


def test_second_request_for_credentials_says_they_were_already_shown(client, ana, active_grant):
    password = sealing.unseal(active_grant.sealed_credentials)["password"]
    client.force_login(ana)
    client.post(credentials_url(active_grant))
    response = client.post(credentials_url(active_grant), follow=True)
    assert response.redirect_chain == [(URL, 302)]
    page = text(response)
    assert "These credentials were already shown once, or the grant is no longer active." in page
    assert escape(password) not in page
    assert ">Show credentials</button>" not in page
    assert "Credentials were shown" in page
    assert AuditEvent.objects.filter(action="grant.credentials_viewed").count() == 1


def test_approver_cannot_see_someone_elses_credentials(client, otto, active_grant):
    sealed = active_grant.sealed_credentials
    password = sealing.unseal(sealed)["password"]
    client.force_login(otto)
    response = client.post(credentials_url(active_grant))
    assert response.status_code == 403
    page = text(response)
    assert "Only the holder can see these credentials." in page
    assert escape(password) not in page
    active_grant.refresh_from_db()
    assert active_grant.sealed_credentials == sealed
    assert active_grant.credentials_seen_at is None
    assert AuditEvent.objects.get(action="grant.credentials_refused").actor == otto


def test_outsider_cannot_see_someone_elses_credentials(client, eve, active_grant):
    sealed = active_grant.sealed_credentials
    password = sealing.unseal(sealed)["password"]
    client.force_login(eve)
    response = client.post(credentials_url(active_grant))
    assert response.status_code == 404
    assert escape(password) not in text(response)
    active_grant.refresh_from_db()
    assert active_grant.sealed_credentials == sealed
    assert not AuditEvent.objects.filter(action="grant.credentials_viewed").exists()


def test_credentials_cannot_be_fetched_with_get(client, ana, active_grant):
    client.force_login(ana)
    assert client.get(credentials_url(active_grant)).status_code == 405
    active_grant.refresh_from_db()
    assert active_grant.sealed_credentials != ""


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
