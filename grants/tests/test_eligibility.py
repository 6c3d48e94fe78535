"""Every decision, extension and provisioning re-checks eligibility; disabling a profile or an account ends what
depended on it (issue 11, finding 3)."""

import datetime
import textwrap

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from accounts import tokens
from audit.models import AuditEvent
from grants import catalog, lifecycle
from grants.models import AccessProfile, AccessRequest, Grant, Policy

from .conftest import JUSTIFICATION

H = datetime.timedelta(hours=1)
RS, GS = AccessRequest.Status, Grant.Status

CATALOG = """\
targets:
  appdb:
    kind: postgres
    config: {host: 127.0.0.1, port: 5432, dbname: appdb}
    secret_env: JIT_TEST_PG_DSN
policies:
  self-service:
    steps:
      - group: db-approvers
    auto_approve:
      - name: within-4h
        max_duration: 4h
profiles:
  ro:
    title: appdb read-only
    target: appdb
    scope: {roles: [app_readonly]}
    max_duration: 4h
    requestable_by: [engineers]
    policy: self-service
  rw:
    title: appdb read-write
    target: appdb
    scope: {roles: [app_readwrite]}
    max_duration: 2h
    requestable_by: [engineers]
    approvers: {group: db-approvers}
"""
WITHOUT_RW = CATALOG.split("  rw:")[0]


def role_exists(pg_cluster, role) -> bool:
    with psycopg.connect(pg_cluster.admin_dsn) as conn:
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone() is not None


def submit(user, profile, **kw):
    kw.setdefault("duration", H)
    req = lifecycle.submit_request(requester=user, profile=profile, justification=JUSTIFICATION, **kw)
    return AccessRequest.objects.get(pk=req.pk)


def disable(profile):
    # As the Django admin's "enabled" box does for a profile no catalog owns,
    # without the admin's own clean-up: the checks below must hold by themselves.
    AccessProfile.objects.filter(pk=profile.pk).update(enabled=False)


@pytest.fixture
def catalog_file(tmp_path, pg_target_env, groups):
    path = tmp_path / "catalog.yaml"
    path.write_text(textwrap.dedent(CATALOG))
    catalog.apply(path)
    return path


# Disabling a profile -----------------------------------------------------------------


def test_disabling_a_profile_in_the_catalog_cancels_its_pending_requests_so_they_cannot_be_approved(
    catalog_file, ana, otto
):
    pending = submit(ana, AccessProfile.objects.get(name="rw"))
    catalog_file.write_text(textwrap.dedent(WITHOUT_RW))
    plan = catalog.plan(catalog_file).render()
    assert "pending requests: 1 -> cancelled" in plan
    catalog.apply(catalog_file)
    pending.refresh_from_db()
    assert pending.status == RS.CANCELLED
    assert pending.decision_comment == "Cancelled by policy: the access profile appdb read-write is disabled."
    event = AuditEvent.objects.get(action="request.cancelled", object_id=str(pending.pk))
    assert event.details["reason"] == "policy" and event.actor is None
    assert AuditEvent.objects.get(action="catalog.applied", details__cancelled=[pending.pk])
    with pytest.raises(lifecycle.TransitionError):
        lifecycle.approve_request(pending.pk, actor=otto)
    assert not Grant.objects.filter(request=pending).exists()


def test_disabling_a_profile_in_the_catalog_cancels_a_pending_extension(catalog_file, ana, otto):
    req = submit(ana, AccessProfile.objects.get(name="rw"))
    lifecycle.approve_request(req.pk, actor=otto)
    grant = lifecycle.provision_grant(req.grant.pk)
    extension = lifecycle.request_extension(
        grant.pk, actor=ana, duration=30 * datetime.timedelta(minutes=1), justification=JUSTIFICATION
    )
    assert extension.status == RS.PENDING
    catalog_file.write_text(textwrap.dedent(WITHOUT_RW))
    catalog.apply(catalog_file)
    extension.refresh_from_db()
    assert extension.status == RS.CANCELLED
    grant.refresh_from_db()
    assert grant.status == GS.ACTIVE  # live grants of a removed profile run to expiry unless --revoke-removed


def test_disabling_a_profile_in_the_admin_cancels_its_pending_requests(client, admin_user, pending_request, profile):
    client.force_login(admin_user)
    url = reverse("admin:grants_accessprofile_change", args=[profile.pk])
    data = {
        "name": profile.name,
        "title": profile.title,
        "target": profile.target_id,
        "description": "",
        "scope": '{"roles": ["app_readonly"]}',
        "default_duration": "01:00:00",
        "max_duration": "04:00:00",
        "requestable_by": [g.pk for g in profile.requestable_by.all()],
        "approver_group": profile.approver_group_id,
        "risk": "",
        "_save": "Save",
    }  # "enabled" left out: unticked
    response = client.post(url, data, follow=True)
    assert "Cancelled 1 pending request(s) for appdb read-only (reason: policy)." in response.content.decode()
    pending_request.refresh_from_db()
    assert pending_request.status == RS.CANCELLED


def test_approving_a_request_whose_profile_is_now_disabled_is_refused_and_it_can_still_be_denied(
    pending_request, otto, profile
):
    disable(profile)
    with pytest.raises(lifecycle.TransitionError) as exc:
        lifecycle.approve_request(pending_request.pk, actor=otto)
    assert str(exc.value) == (
        f"Request #{pending_request.pk} cannot be approved now: "
        "the access profile appdb read-only is disabled. You can still deny it."
    )
    assert not Grant.objects.exists()
    lifecycle.deny_request(pending_request.pk, actor=otto)
    pending_request.refresh_from_db()
    assert pending_request.status == RS.DENIED


def test_the_pages_and_the_api_say_why_a_request_can_no_longer_be_approved(client, pending_request, otto, profile):
    disable(profile)
    client.force_login(otto)
    page = client.post(
        reverse("grants:request_decide", args=[pending_request.pk]), {"action": "approve", "step": "0"}, follow=True
    )
    assert (
        "cannot be approved now: the access profile appdb read-only is disabled. You can still deny it."
        in page.content.decode()
    )
    secret = tokens.create_token(actor=otto, name="test", days=30)[1]
    response = client.post(
        f"/api/v1/requests/{pending_request.pk}/approve",
        data="",
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 409
    assert response.json()["message"].endswith("the access profile appdb read-only is disabled. You can still deny it.")
    pending_request.refresh_from_db()
    assert pending_request.status == RS.PENDING


def test_an_extension_of_a_disabled_profile_is_refused_even_where_a_rule_would_approve_it(active_grant, ana, profile):
    profile.policy = Policy.objects.create(
        name="self", steps=[{"group": "db-approvers"}], auto_approve=[{"name": "any", "max_duration": 14400}]
    )
    profile.save()
    disable(profile)
    with pytest.raises(
        lifecycle.TransitionError,
        match="This access cannot be extended: the access profile appdb read-only is disabled.",
    ):
        lifecycle.request_extension(active_grant.pk, actor=ana, duration=H, justification=JUSTIFICATION)
    assert Grant.objects.get(pk=active_grant.pk).expires_at == active_grant.expires_at
    assert not AccessRequest.objects.filter(extends=active_grant).exists()


def test_approving_an_extension_after_the_profile_was_disabled_is_refused(active_grant, ana, otto, profile):
    extension = lifecycle.request_extension(active_grant.pk, actor=ana, duration=H, justification=JUSTIFICATION)
    disable(profile)
    with pytest.raises(lifecycle.TransitionError, match="disabled"):
        lifecycle.approve_request(extension.pk, actor=otto)
    assert Grant.objects.get(pk=active_grant.pk).expires_at == active_grant.expires_at


def test_a_scheduled_window_of_a_disabled_profile_fails_at_its_start_with_the_reason(ana, otto, profile, pg_cluster):
    req = submit(ana, profile, starts_at=timezone.now() + H)
    lifecycle.approve_request(req.pk, actor=otto)
    disable(profile)
    Grant.objects.filter(request=req).update(
        not_before=timezone.now() - datetime.timedelta(minutes=1)
    )  # the window opens
    grant = lifecycle.provision_grant(Grant.objects.get(request=req).pk)
    assert grant.status == GS.FAILED
    assert grant.last_error == "Not provisioned: the access profile appdb read-only is disabled."
    event = AuditEvent.objects.get(action="grant.failed", object_id=str(grant.pk))
    assert event.details["reason"] == "policy"
    assert not role_exists(pg_cluster, f"jit_g{grant.pk}")


# The requester's groups and account ------------------------------------------------------


def test_approving_for_a_requester_who_lost_the_group_is_refused(pending_request, ana, otto, groups):
    ana.groups.remove(groups["engineers"])  # e.g. in the admin; no login has told the portal yet
    with pytest.raises(lifecycle.TransitionError, match="ana is no longer in a group that may request appdb read-only"):
        lifecycle.approve_request(pending_request.pk, actor=otto)
    assert not Grant.objects.exists()


def test_approving_for_a_deactivated_requester_is_refused(pending_request, ana, otto):
    get_user_model().objects.filter(pk=ana.pk).update(is_active=False)  # no signal: the check must hold by itself
    with pytest.raises(lifecycle.TransitionError, match="ana's account is deactivated"):
        lifecycle.approve_request(pending_request.pk, actor=otto)
    assert not Grant.objects.exists()


def test_provisioning_for_a_requester_who_lost_the_group_fails_with_the_reason(
    approved_request, ana, groups, pg_cluster
):
    ana.groups.remove(groups["engineers"])
    grant = lifecycle.provision_grant(approved_request.grant.pk)
    assert grant.status == GS.FAILED
    assert grant.last_error == "Not provisioned: ana is no longer in a group that may request appdb read-only."
    assert not role_exists(pg_cluster, f"jit_g{grant.pk}")


def test_an_extension_for_a_holder_who_lost_the_group_is_refused(active_grant, ana, groups):
    ana.groups.remove(groups["engineers"])
    with pytest.raises(lifecycle.TransitionError, match="no longer in a group"):
        lifecycle.request_extension(active_grant.pk, actor=ana, duration=H, justification=JUSTIFICATION)


# Deactivating an account ---------------------------------------------------------------------


def test_deactivating_a_user_in_the_admin_cancels_their_requests_and_revokes_their_grants(
    client, admin_user, active_grant, ana, marc, rw_profile, groups, django_capture_on_commit_callbacks
):
    pending = submit(ana, rw_profile)
    client.force_login(admin_user)
    joined = timezone.localtime(ana.date_joined)
    data = {
        "username": "ana",
        "email": ana.email,
        "first_name": "Ana",
        "last_name": "",
        "groups": [groups["engineers"].pk],
        "manager": marc.pk,
        "date_joined_0": joined.strftime("%Y-%m-%d"),
        "date_joined_1": joined.strftime("%H:%M:%S"),
        "_save": "Save",
    }  # "is_active" left out: unticked
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(reverse("admin:accounts_user_change", args=[ana.pk]), data)
    assert response.status_code == 302
    active_grant.refresh_from_db()
    pending.refresh_from_db()
    assert (active_grant.status, active_grant.end_reason) == (GS.REVOKING, "policy")
    assert pending.status == RS.CANCELLED
    assert pending.decision_comment == "Cancelled by policy: ana's account is deactivated."
    assert AuditEvent.objects.filter(
        action="request.cancelled", object_id=str(pending.pk), details__reason="policy"
    ).exists()


def test_deactivating_a_user_ends_a_scheduled_window_too(ana, otto, profile):
    req = submit(ana, profile, starts_at=timezone.now() + H)
    lifecycle.approve_request(req.pk, actor=otto)
    ana.is_active = False
    ana.save()
    grant = Grant.objects.get(request=req)
    assert (grant.status, grant.end_reason) == (GS.REVOKING, "policy")


def test_saving_an_active_user_ends_nothing(active_grant, ana):
    ana.first_name = "Anna"
    ana.save()
    active_grant.refresh_from_db()
    assert active_grant.status == GS.ACTIVE


def test_enforce_group_policy_ends_everything_of_an_account_deactivated_behind_its_back(active_grant, ana, rw_profile):
    pending = submit(ana, rw_profile)
    get_user_model().objects.filter(pk=ana.pk).update(
        is_active=False
    )  # as an IdP sync may, before it calls the lifecycle
    ana.refresh_from_db()
    revoked, cancelled = lifecycle.enforce_group_policy(ana)
    assert (revoked, cancelled) == ([active_grant.pk], [pending.pk])
    pending.refresh_from_db()
    assert pending.decision_comment == "Cancelled by policy: ana's account is deactivated."
