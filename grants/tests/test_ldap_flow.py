"""A directory-group profile through the whole lifecycle on a real
slapd: request, approval, membership, revocation, reconciler."""

import datetime

import ldap3
import pytest
from django.utils import timezone

from grants import lifecycle, reconcile, tasks
from grants.connectors import get_connector
from grants.models import AccessProfile, DriftFinding, Grant, Target

from .conftest import JUSTIFICATION
from .connectors import slapd_support as sd
from .connectors.slapd_support import GROUPS, group_dn, person_dn

H = datetime.timedelta(hours=1)
SECRET_ENV = "JIT_TEST_LDAP_FLOW_PASSWORD"


@pytest.fixture(scope="module")
def slapd():
    if not sd.available():
        pytest.fail(
            "These tests need OpenLDAP: DEBIAN_FRONTEND=noninteractive apt-get install -y slapd ldap-utils "
            "(make system-deps)."
        )
    server = sd.SlapdServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ldap_profile(db, slapd, monkeypatch, groups):
    slapd.reset()
    monkeypatch.setenv(SECRET_ENV, sd.SERVICE_PW)
    target = Target.objects.create(
        name="corp-directory", kind="ldap", secret_env=SECRET_ENV,
        config={"url": slapd.url, "bind_dn": sd.SERVICE_DN, "user_base": sd.PEOPLE, "user_filter": "(mail={email})",
                "ledger_dn": sd.LEDGER},
    )  # fmt: skip
    profile = AccessProfile.objects.create(
        name="ops-group", title="ops group", target=target, scope={"groups": [group_dn("ops")]},
        max_duration=4 * H, approver_group=groups["db-approvers"],
    )  # fmt: skip
    profile.requestable_by.add(groups["engineers"])
    return profile


def groups_of(slapd, uid: str) -> set[str]:
    """Ask the directory as the person does: which groups list me?"""
    with slapd.bind_as(uid) as app:
        app.search(GROUPS, f"(member={person_dn(uid)})", attributes=["cn"])
        return {e.cn.value for e in app.entries}


def test_an_approved_request_makes_the_person_a_member_until_revocation_confirms_it_gone(
    ana, otto, ldap_profile, slapd
):
    req = lifecycle.submit_request(requester=ana, profile=ldap_profile, duration=H, justification=JUSTIFICATION)
    lifecycle.approve_request(req.pk, actor=otto)
    grant = lifecycle.provision_grant(req.grant.pk)
    assert grant.status == "active" and grant.external_ref == f"jit_g{grant.pk}"
    creds = lifecycle.reveal_credentials(grant.pk, actor=ana)
    assert creds["directory_entry"].lower() == person_dn("ana").lower() and creds["groups"] == group_dn("ops")
    assert groups_of(slapd, "ana") == {"ops"}
    assert reconcile.reconcile_target(ldap_profile.target) == []  # explained by the grant

    lifecycle.revoke_grant(grant.pk, actor=ana, reason="released")
    grant = lifecycle.complete_revocation(grant.pk)
    assert grant.status == "revoked" and grant.verified_at
    assert groups_of(slapd, "ana") == set()
    assert groups_of(slapd, "bob") == {"ops"}  # bob's own membership is untouched


def test_expiry_ends_the_membership_through_the_sweeper(ana, otto, ldap_profile, slapd):
    req = lifecycle.submit_request(requester=ana, profile=ldap_profile, duration=H, justification=JUSTIFICATION)
    lifecycle.approve_request(req.pk, actor=otto)
    grant = lifecycle.provision_grant(req.grant.pk)
    Grant.objects.filter(pk=grant.pk).update(expires_at=timezone.now() - datetime.timedelta(seconds=1))
    assert tasks.expire_due() == 1
    grant.refresh_from_db()
    assert grant.status == "revoked" and grant.end_reason == "expired"
    assert groups_of(slapd, "ana") == set()


def test_the_reconciler_removes_a_membership_the_portal_added_that_no_grant_explains(ana, otto, ldap_profile, slapd):
    # What a provisioning worker had done when it died: the ledger entry and
    # the membership exist, the portal's transaction never committed.
    req = lifecycle.submit_request(requester=ana, profile=ldap_profile, duration=H, justification=JUSTIFICATION)
    lifecycle.approve_request(req.pk, actor=otto)
    grant = Grant.objects.select_related("profile__target", "user").get(request=req)
    grant.expires_at = timezone.now() + grant.duration
    with get_connector(grant.profile.target) as connector:
        connector.provision(grant)
    # And one nobody in the portal ever heard of, plus a member an admin added by hand.
    slapd.modify(group_dn("dba"), {"member": [(ldap3.MODIFY_ADD, [person_dn("ana")])]})
    assert groups_of(slapd, "ana") == {"ops", "dba"}

    findings = reconcile.reconcile_target(ldap_profile.target)

    assert [(f.external_ref, f.kind, f.action) for f in findings] == [
        (f"jit_g{grant.pk}", "orphan", "removed from the target")
    ]
    assert groups_of(slapd, "ana") == {"dba"}  # the portal never removes what it did not add
    assert groups_of(slapd, "bob") == {"ops"}
    assert Grant.objects.get(pk=grant.pk).status == "scheduled"
    assert lifecycle.provision_grant(grant.pk).status == "active"  # the sweeper's retry provisions it properly
    assert groups_of(slapd, "ana") == {"ops", "dba"}


def test_an_active_grant_whose_membership_record_vanished_is_reported(ana, otto, ldap_profile, slapd):
    req = lifecycle.submit_request(requester=ana, profile=ldap_profile, duration=H, justification=JUSTIFICATION)
    lifecycle.approve_request(req.pk, actor=otto)
    grant = lifecycle.provision_grant(req.grant.pk)
    slapd.delete(f"cn={grant.external_ref},{sd.LEDGER}")
    findings = reconcile.reconcile_target(ldap_profile.target)
    assert [(f.kind, f.grant_id) for f in findings] == [(DriftFinding.Kind.MISSING, grant.pk)]


def test_a_person_the_directory_does_not_know_fails_with_the_reason(eve, otto, ldap_profile, groups):
    eve.groups.add(groups["engineers"])
    req = lifecycle.submit_request(requester=eve, profile=ldap_profile, duration=H, justification=JUSTIFICATION)
    lifecycle.approve_request(req.pk, actor=otto)
    grant = lifecycle.provision_grant(req.grant.pk)
    assert grant.status == "failed"
    assert "No entry under" in grant.last_error and "eve@example.com" in grant.last_error


def test_ldap_access_can_be_extended_in_place(ana, otto, ldap_profile):
    req = lifecycle.submit_request(requester=ana, profile=ldap_profile, duration=H, justification=JUSTIFICATION)
    lifecycle.approve_request(req.pk, actor=otto)
    grant = lifecycle.provision_grant(req.grant.pk)
    ext = lifecycle.request_extension(grant.pk, actor=ana, duration=H, justification=JUSTIFICATION)
    lifecycle.approve_request(ext.pk, actor=otto)
    assert lifecycle.extend_on_target(grant.pk).last_error == ""
