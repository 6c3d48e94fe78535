"""A login that shows a lost group ends the grants and requests that depended on it (reason: policy)."""

from django.core.management import call_command

from accounts.adapter import sync_user_from_claims
from audit.models import AuditEvent
from grants import lifecycle
from grants.models import AccessRequest, Grant


def test_losing_a_group_revokes_grants_and_cancels_requests_that_needed_it(active_grant, ana, rw_profile):
    pending = lifecycle.submit_request(
        requester=ana,
        profile=rw_profile,
        duration=active_grant.duration,
        justification="Fix the broken migration on orders",
    )
    sync_user_from_claims(ana, {"groups": ["db-approvers"]})  # engineers is gone
    active_grant.refresh_from_db()
    pending.refresh_from_db()
    assert active_grant.status == Grant.Status.REVOKING
    assert active_grant.end_reason == "policy"
    assert pending.status == AccessRequest.Status.CANCELLED
    assert AuditEvent.objects.filter(action="grant.revoke_requested", details__reason="policy").exists()
    assert AuditEvent.objects.filter(action="request.cancelled", details__reason="policy").exists()


def test_keeping_the_group_keeps_the_grant(active_grant, ana):
    sync_user_from_claims(ana, {"groups": ["engineers", "extra"]})
    active_grant.refresh_from_db()
    assert active_grant.status == Grant.Status.ACTIVE


def test_operator_command_applies_the_same_check_to_everyone(active_grant, ana, groups):
    ana.groups.remove(groups["engineers"])  # e.g. changed in the admin or by SCIM
    call_command("enforce_group_policy")
    active_grant.refresh_from_db()
    assert active_grant.status == Grant.Status.REVOKING and active_grant.end_reason == "policy"
