"""A request form that helps: fields per target kind, the default duration, the person's time zone, live status.

The script's part (filling, hiding, polling) is checked in the browser
(tests/e2e/test_request_form.py); here the server's side of it: what the
page carries for the script, and that everything works without it.
"""

import datetime
import json
import re
import zoneinfo

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts import timezones, tokens
from grants import lifecycle
from grants.connectors.ssh import ca as sshca
from grants.models import AccessProfile, AccessRequest, Target

from .support import form_data

NEW = reverse("grants:request_new")
H = datetime.timedelta(hours=1)
PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def text(response):
    return response.content.decode()


def hints(page) -> dict:
    found = re.search(r'<script id="profile-hints" type="application/json">(.*?)</script>', page, re.S)
    return json.loads(found.group(1))


@pytest.fixture
def ssh_profile(db, tmp_path, monkeypatch, groups):
    ca = tmp_path / "ca"
    sshca.generate_ca(ca)
    monkeypatch.setenv("JIT_TEST_SSH_CA", str(ca))
    target = Target.objects.create(
        name="hosts", kind="ssh", config={"host": "127.0.0.1", "port": 22}, secret_env="JIT_TEST_SSH_CA"
    )
    profile = AccessProfile.objects.create(
        name="ssh-deploy",
        title="SSH as deploy",
        target=target,
        scope={"principals": ["deploy"]},
        default_duration=2 * H,
        max_duration=4 * H,
        approver_group=groups["db-approvers"],
    )
    profile.requestable_by.add(groups["engineers"])
    return profile


# Fields per target kind, default duration -------------------------------------


def test_ssh_key_field_is_offered_only_when_an_ssh_profile_is(client, ana, profile):
    client.force_login(ana)
    assert ">SSH public key</label>" not in text(client.get(NEW))


def test_ssh_key_field_comes_from_the_connector_and_names_the_kinds_it_is_for(client, ana, profile, ssh_profile):
    client.force_login(ana)
    page = text(client.get(NEW))
    assert ">SSH public key</label>" in page
    assert re.search(r'<textarea name="public_key"[^>]*data-kinds="ssh"', page)
    assert "For ssh profiles. Paste your public key" in page


def test_page_tells_the_script_each_profiles_default_duration_and_kind(client, ana, profile, ssh_profile):
    client.force_login(ana)
    assert hints(text(client.get(NEW))) == {
        str(profile.pk): {"duration": "1h", "kind": "postgres"},
        str(ssh_profile.pk): {"duration": "2h", "kind": "ssh"},
    }


def test_a_key_typed_into_the_form_reaches_the_request(client, ana, ssh_profile, tmp_path):
    _, public = sshca.generate_user_key(comment="ana@laptop")
    client.force_login(ana)
    response = client.post(NEW, form_data(ssh_profile, public_key=public))
    assert response.status_code == 302
    assert AccessRequest.objects.get().params == {"public_key": sshca.validate_public_key(public)}


def test_a_bad_key_is_explained_under_its_field(client, ana, ssh_profile):
    client.force_login(ana)
    response = client.post(NEW, form_data(ssh_profile, public_key="ssh-dss AAAA"))
    assert response.status_code == 200
    page = text(response)
    assert (
        page.index(">SSH public key</label>")
        < page.index('class="error" role="alert"')
        < page.index(">Request access</button>")
    )
    assert not AccessRequest.objects.exists()


def test_api_lists_each_profiles_request_fields(client, ana, profile, ssh_profile):
    _, secret = tokens.create_token(actor=ana, name="ci", days=1)
    listed = client.get("/api/v1/profiles", headers={"Authorization": f"Bearer {secret}"}).json()
    assert {p["name"]: p["request_fields"] for p in listed} == {"appdb-readonly": [], "ssh-deploy": ["public_key"]}


# Time zone -------------------------------------------------------------------


def test_start_is_read_in_the_zone_chosen_on_the_form_and_the_zone_is_remembered(client, ana, profile):
    start = (timezone.now() + datetime.timedelta(days=3)).astimezone(PARIS).replace(second=0, microsecond=0)
    client.force_login(ana)
    response = client.post(
        NEW, form_data(profile, starts_at=start.strftime("%Y-%m-%dT%H:%M"), time_zone="Europe/Paris")
    )
    assert response.status_code == 302
    assert response.cookies[timezones.COOKIE].value == "Europe/Paris"
    req = AccessRequest.objects.get()
    assert req.starts_at == start
    page = text(client.get(response["Location"]))
    assert f"{start:%Y-%m-%d %H:%M} {start.tzname()} (Europe/Paris)" in page


def test_zone_from_the_cookie_is_the_forms_zone_and_reads_the_start(client, ana, profile):
    client.cookies[timezones.COOKIE] = "America/New_York"
    new_york = zoneinfo.ZoneInfo("America/New_York")
    start = (timezone.now() + datetime.timedelta(days=3)).astimezone(new_york).replace(second=0, microsecond=0)
    client.force_login(ana)
    page = text(client.get(NEW))
    assert "(times in America/New_York)" in page
    assert '<option value="America/New_York" selected>America/New_York</option>' in page
    client.post(NEW, form_data(profile, starts_at=start.strftime("%Y-%m-%dT%H:%M")))
    assert AccessRequest.objects.get().starts_at == start


@pytest.mark.parametrize("cookie", ["Mars/Olympus", "../../../etc/passwd", "", "x" * 5000])
def test_a_cookie_that_names_no_zone_falls_back_to_the_portals(client, ana, profile, cookie):
    client.cookies[timezones.COOKIE] = cookie
    client.force_login(ana)
    response = client.get(NEW)
    assert response.status_code == 200
    assert "(times in UTC)" in text(response)


def test_a_zone_that_is_not_offered_is_a_form_error(client, ana, profile):
    client.force_login(ana)
    response = client.post(NEW, form_data(profile, starts_at="2099-01-01T10:00", time_zone="Mars/Olympus"))
    assert response.status_code == 200
    assert "Pick a time zone from the list, e.g. Europe/Paris." in text(response)
    assert not AccessRequest.objects.exists()


def test_a_start_that_the_clock_change_skips_is_a_form_error(client, ana, profile):
    year = timezone.now().year + 1
    client.force_login(ana)
    # Europe/Paris springs forward from 02:00 to 03:00 on the last Sunday of March.
    last_sunday = max(d for d in (datetime.date(year, 3, day) for day in range(25, 32)) if d.weekday() == 6)
    response = client.post(NEW, form_data(profile, starts_at=f"{last_sunday}T02:30", time_zone="Europe/Paris"))
    assert response.status_code == 200
    assert "couldn’t be interpreted in time zone Europe/Paris" in text(response)
    assert not AccessRequest.objects.exists()


def test_zone_picked_on_the_settings_page_is_used_by_the_next_pages(client, ana, profile):
    client.force_login(ana)
    assert '<option value="UTC" selected>UTC</option>' in text(client.get(reverse("accounts:notifications")))
    response = client.post(reverse("accounts:time_zone"), {"time_zone": "Asia/Tokyo"}, follow=True)
    page = text(response)
    assert "Times are now shown in Asia/Tokyo." in page
    assert '<option value="Asia/Tokyo" selected>Asia/Tokyo</option>' in page
    assert "(times in Asia/Tokyo)" in text(client.get(NEW))


def test_a_zone_not_offered_on_the_settings_page_is_refused_with_a_reason(client, ana):
    client.force_login(ana)
    response = client.post(reverse("accounts:time_zone"), {"time_zone": "Mars/Olympus"}, follow=True)
    assert "Pick a time zone from the list, e.g. Europe/Paris." in text(response)
    assert timezones.COOKIE not in client.cookies


# Live status ------------------------------------------------------------------


def status(client, req):
    response = client.get(reverse("grants:request_status", args=[req.pk]))
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    return response.json()


def test_status_follows_the_request_from_pending_to_ready(client, ana, otto, pending_request):
    client.force_login(ana)
    assert status(client, pending_request) == {
        "id": pending_request.pk,
        "status": "pending",
        "status_display": "Pending",
        "grant": None,
        "credentials_url": None,
    }
    lifecycle.approve_request(pending_request.pk, actor=otto)
    approved = status(client, pending_request)
    grant = pending_request.grant
    assert approved["status"] == "approved" and approved["grant"]["status"] == "scheduled"
    assert approved["credentials_url"] is None
    lifecycle.provision_grant(grant.pk)
    ready = status(client, pending_request)
    assert ready["grant"] == {
        "id": grant.pk,
        "status": "active",
        "status_display": "Active",
        "url": f"/access/grants/{grant.pk}/",
    }
    assert ready["credentials_url"] == f"/access/grants/{grant.pk}/credentials"
    lifecycle.reveal_credentials(grant.pk, actor=ana)
    assert status(client, pending_request)["credentials_url"] is None


def test_status_offers_credentials_to_the_holder_only(client, otto, active_grant):
    client.force_login(otto)
    assert status(client, active_grant.request)["credentials_url"] is None


def test_request_page_offers_show_credentials_once_ready_even_without_the_script(client, ana, active_grant):
    client.force_login(ana)
    page = text(client.get(reverse("grants:request_detail", args=[active_grant.request.pk])))
    assert f'<form method="post" action="/access/grants/{active_grant.pk}/credentials" data-live-credentials>' in page
    assert ">Show credentials</button>" in page


def test_pending_request_page_carries_a_hidden_show_credentials_for_the_script(client, ana, pending_request):
    client.force_login(ana)
    page = text(client.get(reverse("grants:request_detail", args=[pending_request.pk])))
    assert f'data-live="/access/requests/{pending_request.pk}/status"' in page
    assert '<form method="post" action="" data-live-credentials hidden>' in page


def test_the_settings_page_shows_its_time_zone_form_once_in_the_page_not_in_its_title(client, ana):
    client.force_login(ana)
    page = text(client.get(reverse("accounts:notifications")))
    title = re.search(r"<title>(.*?)</title>", page, re.S).group(1)
    assert "<form" not in title and "Notifications" in title
    assert page.count("Use this time zone") == 1
