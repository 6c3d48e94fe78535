"""Credentials: shown once to the holder, sealed until then, never kept in clear, never shown to anyone else.

Lifecycle, pages (My access's Show credentials, the admin) and the API. The request page's live
"Show credentials" is in test_request_form.py (live status); high-risk grants' password step in
test_step_up.py.
"""

import psycopg
import pytest
from django.urls import reverse
from django.utils.html import escape

from api.tests.support import refusals
from audit.models import AuditEvent
from grants import lifecycle, sealing
from grants.models import Grant

URL = reverse("grants:my_access")


def text(response):
    return response.content.decode()


def credentials_url(grant):
    return reverse("grants:grant_credentials", args=[grant.pk])


# Lifecycle ----------------------------------------------------------------------------------------


def test_credentials_are_shown_once_and_not_kept(active_grant, ana):
    creds = lifecycle.reveal_credentials(active_grant.pk, actor=ana)
    assert creds["username"] == active_grant.external_ref
    with psycopg.connect(creds["dsn"]) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] > 0
    active_grant.refresh_from_db()
    assert active_grant.sealed_credentials == ""
    with pytest.raises(lifecycle.TransitionError, match="already shown"):
        lifecycle.reveal_credentials(active_grant.pk, actor=ana)


def test_nobody_but_the_holder_sees_credentials(active_grant, otto):
    with pytest.raises(lifecycle.NotAllowedError):
        lifecycle.reveal_credentials(active_grant.pk, actor=otto)
    active_grant.refresh_from_db()
    assert active_grant.sealed_credentials
    assert AuditEvent.objects.filter(action="grant.credentials_refused", actor=otto).exists()


# Pages: My access ---------------------------------------------------------------------------------


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


# Pages: the admin ---------------------------------------------------------------------------------


def test_grant_change_page_never_shows_the_sealed_credentials(client, admin_user, active_grant):
    client.force_login(admin_user)
    response = client.get(reverse("admin:grants_grant_change", args=[active_grant.pk]))
    assert response.status_code == 200
    assert active_grant.sealed_credentials not in text(response)
    assert "sealed_credentials" not in text(response)


# API ----------------------------------------------------------------------------------------------


def test_holder_gets_the_credentials_once(api, ana, active_grant):
    caller = api(ana)
    response = caller.get(f"/requests/{active_grant.request_id}/credentials")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["kind"] == "postgres"
    assert body["grant"] == active_grant.pk
    assert body["credentials"]["username"] == active_grant.external_ref
    assert body["credentials"]["dsn"].startswith("postgresql://")
    assert body["credentials"]["password"]
    again = caller.get(f"/requests/{active_grant.request_id}/credentials")
    assert again.status_code == 409
    assert again.json() == {
        "code": "conflict",
        "message": "These credentials were already shown once, or the grant is no longer active.",
    }
    assert AuditEvent.objects.filter(action="grant.credentials_viewed").count() == 1


def test_nobody_else_gets_the_credentials(api, otto, eve, active_grant):
    response = api(otto).get(f"/requests/{active_grant.request_id}/credentials")
    assert response.status_code == 403
    assert response.json()["message"] == "Only the holder can see these credentials."
    assert refusals("grant.credentials_refused") == 1
    assert api(eve).get(f"/requests/{active_grant.request_id}/credentials").status_code == 404
    assert Grant.objects.get(pk=active_grant.pk).credentials_available


def test_credentials_of_a_grant_being_set_up_are_a_conflict(api, ana, approved_request):
    response = api(ana).get(f"/requests/{approved_request.pk}/credentials")
    assert response.status_code == 409
    assert "being set up" in response.json()["message"]
