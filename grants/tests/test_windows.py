"""Scheduled access windows: approved ahead, provisioned at their start (`not_before`), ended at their end.

Lifecycle, pages (the request form's Start), tasks and the API. The real workers opening and closing a
window are in test_scheduled_expiry.py, with the other end-to-end runs of the qcluster.
"""

import datetime
import zoneinfo

import psycopg
import pytest
from django.urls import reverse
from django.utils import timezone

from grants import lifecycle
from grants.connectors import get_connector
from grants.models import AccessRequest, Grant

from .conftest import JUSTIFICATION
from .support import form_data

H = datetime.timedelta(hours=1)
RS = AccessRequest.Status
NEW = reverse("grants:request_new")


def text(response):
    return response.content.decode()


def new_request(**overrides):
    return {
        "profile": "appdb-readonly",
        "duration_seconds": 1800,
        "justification": JUSTIFICATION,
        "ticket": "INC-4711",
        **overrides,
    }


# Lifecycle ----------------------------------------------------------------------------------------


def test_a_window_is_approved_ahead_provisioned_at_its_start_and_ends_at_its_end(ana, otto, profile):
    start = timezone.now() + datetime.timedelta(days=2)
    req = lifecycle.submit_request(
        requester=ana, profile=profile, duration=2 * H, justification=JUSTIFICATION, starts_at=start
    )
    lifecycle.approve_request(req.pk, actor=otto)
    grant = Grant.objects.get(request=req)
    assert grant.not_before == start
    assert lifecycle.provision_grant(grant.pk) is None  # not yet
    assert Grant.objects.get(pk=grant.pk).status == "scheduled"
    # The window opens (its start moved to a moment ago, as if time passed).
    Grant.objects.filter(pk=grant.pk).update(not_before=timezone.now() - datetime.timedelta(minutes=10))
    grant = lifecycle.provision_grant(grant.pk)
    assert grant.status == "active"
    assert grant.expires_at == grant.not_before + 2 * H  # ends where the window ends, not 2 h from now


def test_a_window_that_ended_before_approval_fails_clearly(ana, otto, profile):
    req = lifecycle.submit_request(
        requester=ana, profile=profile, duration=H, justification=JUSTIFICATION, starts_at=timezone.now() + H
    )
    lifecycle.approve_request(req.pk, actor=otto)
    grant = Grant.objects.get(request=req)
    Grant.objects.filter(pk=grant.pk).update(not_before=timezone.now() - 2 * H)
    grant = lifecycle.provision_grant(grant.pk)
    assert grant.status == "failed"
    assert "window ended" in grant.last_error


def test_a_window_in_the_past_is_refused(ana, profile):
    with pytest.raises(lifecycle.InvalidRequestError) as exc:
        lifecycle.submit_request(
            requester=ana, profile=profile, duration=H, justification=JUSTIFICATION, starts_at=timezone.now() - H
        )
    assert "in the past" in exc.value.errors["starts_at"]


def test_a_pending_window_lapses_when_it_ends(ana, profile):
    req = lifecycle.submit_request(
        requester=ana, profile=profile, duration=H, justification=JUSTIFICATION, starts_at=timezone.now() + H
    )
    assert lifecycle.lapse_stale_requests(timezone.now() + 2 * H + datetime.timedelta(seconds=1)) == 1
    req.refresh_from_db()
    assert req.status == "lapsed"


# Pages: the request form's Start ------------------------------------------------------------------


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


# Tasks --------------------------------------------------------------------------------------------


def _role_exists(pg_cluster, role) -> bool:
    with psycopg.connect(pg_cluster.admin_dsn, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone() is not None


def test_a_window_that_ended_fails_its_grant_and_removes_what_a_crashed_attempt_left(
    ana, otto, profile, pg_cluster, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr("django_q.conf.Conf.SYNC", True)  # the clean-up task runs in this process
    start = timezone.now() + datetime.timedelta(hours=1)
    req = lifecycle.submit_request(
        requester=ana,
        profile=profile,
        duration=datetime.timedelta(minutes=30),
        justification="Investigate INC-4711: slow order queries on appdb",
        starts_at=start,
    )
    lifecycle.approve_request(req.pk, actor=otto)
    grant = Grant.objects.get(request=req)
    # An attempt made the role on the target, then its worker died before the portal's commit.
    grant.expires_at = timezone.now() + datetime.timedelta(minutes=5)
    with get_connector(profile.target) as connector:
        role = connector.provision(grant).external_ref
    assert _role_exists(pg_cluster, role)
    Grant.objects.filter(pk=grant.pk).update(not_before=timezone.now() - datetime.timedelta(hours=2))

    with django_capture_on_commit_callbacks(execute=True):
        grant = lifecycle.provision_grant(grant.pk)

    assert grant.status == Grant.Status.FAILED and "window ended" in grant.last_error
    assert not _role_exists(pg_cluster, role)


# API ----------------------------------------------------------------------------------------------


def test_a_scheduled_window_needs_a_time_zone(api, ana, profile):
    start = (timezone.now() + datetime.timedelta(hours=2)).replace(microsecond=0)
    response = api(ana).post("/requests", new_request(starts_at=start.replace(tzinfo=None).isoformat()))
    assert response.status_code == 400
    assert response.json()["field"] == "starts_at"
    response = api(ana).post("/requests", new_request(starts_at=start.isoformat()))
    assert response.status_code == 201
    assert datetime.datetime.fromisoformat(response.json()["starts_at"]) == start
