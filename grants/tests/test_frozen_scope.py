"""What a grant gives is frozen on the request at submission: the approver sees it, the connector provisions it,
the trail records it (issue 11, finding 10)."""

import datetime
import importlib

import psycopg
import pytest
from django.apps import apps
from django.urls import reverse
from django.utils import timezone

from accounts import tokens
from audit.models import AuditEvent
from grants import lifecycle
from grants.models import AccessRequest, Grant, Policy, Target

from .conftest import JUSTIFICATION

H = datetime.timedelta(hours=1)
WIDER = {"roles": ["app_readwrite"], "owner_role": "app_owner"}


def memberships(pg_cluster, role) -> set[str]:
    with psycopg.connect(pg_cluster.admin_dsn) as conn:
        rows = conn.execute(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
            " JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s",
            [role],
        ).fetchall()
    return {name for (name,) in rows}


def widen(profile):
    profile.scope = WIDER
    profile.save()


# Provisioning --------------------------------------------------------------------------


def test_a_profile_widened_after_approval_does_not_widen_the_grant(approved_request, profile, pg_cluster):
    widen(profile)
    grant = lifecycle.provision_grant(approved_request.grant.pk)
    assert grant.status == Grant.Status.ACTIVE
    assert memberships(pg_cluster, grant.external_ref) == {"app_readonly"}


def test_a_window_approved_ahead_is_provisioned_with_the_scope_it_was_approved_with(ana, otto, profile, pg_cluster):
    req = lifecycle.submit_request(
        requester=ana,
        profile=profile,
        duration=H,
        justification=JUSTIFICATION,
        starts_at=timezone.now() + datetime.timedelta(days=30),
    )
    lifecycle.approve_request(req.pk, actor=otto)
    widen(profile)
    Grant.objects.filter(request=req).update(not_before=timezone.now() - datetime.timedelta(minutes=1))  # a month later
    grant = lifecycle.provision_grant(Grant.objects.get(request=req).pk)
    assert memberships(pg_cluster, grant.external_ref) == {"app_readonly"}


def test_an_extension_keeps_the_scope_of_the_grant_it_extends(active_grant, ana, otto, profile):
    widen(profile)
    extension = lifecycle.request_extension(active_grant.pk, actor=ana, duration=H, justification=JUSTIFICATION)
    assert extension.scope == {"roles": ["app_readonly"]}
    assert AuditEvent.objects.get(action="request.submitted", object_id=str(extension.pk)).details["scope"] == {
        "roles": ["app_readonly"]
    }


def test_a_request_whose_profile_moved_to_another_target_is_not_provisioned_there(
    approved_request, profile, pg_target_env, pg_cluster
):
    # The same server under another name: provisioning there would succeed, and was never approved.
    other = Target.objects.create(
        name="elsewhere", kind="postgres", config=profile.target.config, secret_env="JIT_TEST_PG_DSN"
    )
    profile.target = other
    profile.save()
    grant = lifecycle.provision_grant(approved_request.grant.pk)
    assert grant.status == Grant.Status.FAILED
    assert "now points at another target than the one asked for" in grant.last_error
    assert memberships(pg_cluster, f"jit_g{grant.pk}") == set()


# The trail ----------------------------------------------------------------------------


def test_the_frozen_scope_is_in_the_submitted_and_approved_events(approved_request):
    for action in ("request.submitted", "request.approved"):
        event = AuditEvent.objects.get(action=action, object_id=str(approved_request.pk))
        assert event.details["scope"] == {"roles": ["app_readonly"]}, action


def test_the_frozen_scope_is_in_step_and_policy_approvals(ana, otto, profile, groups):
    profile.policy = Policy.objects.create(
        name="two",
        steps=[{"group": "db-approvers"}, {"group": "db-approvers"}],
        auto_approve=[{"name": "short", "max_duration": 600}],
    )
    profile.save()
    req = lifecycle.submit_request(requester=ana, profile=profile, duration=H, justification=JUSTIFICATION)
    lifecycle.approve_request(req.pk, actor=otto)
    assert AuditEvent.objects.get(action="request.step_approved").details["scope"] == {"roles": ["app_readonly"]}
    lifecycle.cancel_request(req.pk, actor=ana)
    auto = lifecycle.submit_request(
        requester=ana, profile=profile, duration=datetime.timedelta(minutes=5), justification=JUSTIFICATION
    )
    assert AuditEvent.objects.get(action="request.auto_approved", object_id=str(auto.pk)).details["scope"] == {
        "roles": ["app_readonly"]
    }


# What the approver sees ------------------------------------------------------------------


def test_the_approver_sees_what_the_request_grants(client, otto, pending_request):
    client.force_login(otto)
    for url in (reverse("grants:inbox"), reverse("grants:request_detail", args=[pending_request.pk])):
        page = client.get(url).content.decode()
        assert "<dt>Grants</dt><dd>roles: app_readonly" in page, url
        assert "The profile now grants" not in page


def test_the_approver_is_told_when_the_profile_now_grants_something_else(client, otto, pending_request, profile):
    widen(profile)
    client.force_login(otto)
    page = client.get(reverse("grants:inbox")).content.decode()
    assert "<dt>Grants</dt><dd>roles: app_readonly" in page
    assert (
        "The profile now grants roles: app_readwrite; owner_role: app_owner; this request asks for roles: app_readonly"
        in page
    )


def test_the_api_shows_the_frozen_scope(client, otto, pending_request, profile):
    widen(profile)
    secret = tokens.create_token(actor=otto, name="test", days=30)[1]
    body = client.get(f"/api/v1/requests/{pending_request.pk}", headers={"Authorization": f"Bearer {secret}"}).json()
    assert body["scope"] == {"roles": ["app_readonly"]}


# Requests made before scopes were frozen ------------------------------------------------


def test_the_migration_freezes_older_requests_from_their_profile(pending_request, profile):
    AccessRequest.objects.filter(pk=pending_request.pk).update(scope=None, max_duration=None, target=None)
    assert AccessRequest.objects.get(pk=pending_request.pk).effective_scope == {
        "roles": ["app_readonly"]
    }  # the fallback
    importlib.import_module("grants.migrations.0012_frozen_request_scope").freeze_from_profiles(apps, None)
    req = AccessRequest.objects.get(pk=pending_request.pk)
    assert (req.scope, req.max_duration, req.target_id) == (
        {"roles": ["app_readonly"]},
        profile.max_duration,
        profile.target_id,
    )


@pytest.mark.parametrize("scope", [{}, {"roles": ["app_readonly"]}])
def test_an_empty_frozen_scope_stays_empty(ana, profile, scope):
    profile.scope = scope
    profile.save()
    req = lifecycle.submit_request(requester=ana, profile=profile, duration=H, justification=JUSTIFICATION)
    widen(profile)
    assert AccessRequest.objects.get(pk=req.pk).effective_scope == scope
