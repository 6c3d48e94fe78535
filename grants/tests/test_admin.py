"""The admin: revoking grants goes through the lifecycle; the audit trail can be read, never changed."""

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from audit.models import AuditEvent
from grants.models import AccessRequest, Grant

GS = Grant.Status
GRANTS = reverse("admin:grants_grant_changelist")


def text(response):
    return response.content.decode()


def revoke_selected(client, *grants):
    return client.post(
        GRANTS,
        {"action": "revoke_selected", "select_across": "0", "index": "0", "_selected_action": [g.pk for g in grants]},
        follow=True,
    )


@pytest.fixture
def viewer(django_user_model):
    """Staff who may look at grants but not change them."""
    user = django_user_model.objects.create_user("vera", "vera@example.com", "vera-password-123", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_grant"))
    return user


# Revoking ------------------------------------------------------------------


def test_admin_revokes_an_active_grant_from_the_changelist(
    client, admin_user, active_grant, django_capture_on_commit_callbacks
):
    client.force_login(admin_user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = revoke_selected(client, active_grant)
    assert response.status_code == 200
    assert "Revoking 1 grant(s); each is marked revoked once the target confirms." in text(response)
    assert len(callbacks) == 1
    active_grant.refresh_from_db()
    assert active_grant.status == GS.REVOKING
    assert active_grant.end_reason == Grant.EndReason.REVOKED
    assert active_grant.ended_by == admin_user
    event = AuditEvent.objects.get(action="grant.revoke_requested")
    assert event.actor == admin_user
    assert event.details["reason"] == "revoked"


def test_revoking_a_grant_that_is_already_ending_warns_and_changes_nothing(client, admin_user, ana, active_grant):
    client.force_login(ana)
    client.post(reverse("grants:grant_release", args=[active_grant.pk]))
    client.force_login(admin_user)
    response = revoke_selected(client, active_grant)
    assert f"Grant #{active_grant.pk}: Grant #{active_grant.pk} is revoking; it cannot become revoking." in text(
        response
    )
    active_grant.refresh_from_db()
    assert active_grant.end_reason == Grant.EndReason.RELEASED
    assert AuditEvent.objects.filter(action="grant.revoke_requested").count() == 1


def test_staff_who_may_only_view_grants_cannot_revoke_them(client, viewer, active_grant):
    client.force_login(viewer)
    page = text(client.get(GRANTS))
    assert "revoke_selected" not in page
    revoke_selected(client, active_grant)
    active_grant.refresh_from_db()
    assert active_grant.status == GS.ACTIVE
    assert not AuditEvent.objects.filter(action="grant.revoke_requested").exists()


# No adding or deleting requests and grants -----------------------------------


@pytest.mark.parametrize("model", ["accessrequest", "grant"])
def test_requests_and_grants_cannot_be_added_in_the_admin(client, admin_user, active_grant, model):
    client.force_login(admin_user)
    changelist = text(client.get(reverse(f"admin:grants_{model}_changelist")))
    assert reverse(f"admin:grants_{model}_add") not in changelist
    assert client.get(reverse(f"admin:grants_{model}_add")).status_code == 403
    assert client.post(reverse(f"admin:grants_{model}_add"), {}).status_code == 403


@pytest.mark.parametrize("model", ["accessrequest", "grant"])
def test_requests_and_grants_cannot_be_deleted_in_the_admin(client, admin_user, active_grant, model):
    client.force_login(admin_user)
    obj = active_grant if model == "grant" else active_grant.request
    assert client.post(reverse(f"admin:grants_{model}_delete", args=[obj.pk]), {"post": "yes"}).status_code == 403
    assert AccessRequest.objects.filter(pk=active_grant.request_id).exists()
    assert Grant.objects.filter(pk=active_grant.pk).exists()


def test_request_status_cannot_be_edited_in_the_admin(client, admin_user, pending_request):
    client.force_login(admin_user)
    url = reverse("admin:grants_accessrequest_change", args=[pending_request.pk])
    client.post(url, {"status": "approved", "justification": "rewritten", "_save": "Save"})
    pending_request.refresh_from_db()
    assert pending_request.status == AccessRequest.Status.PENDING
    assert pending_request.justification != "rewritten"


# The audit trail -------------------------------------------------------------


def test_audit_events_are_listed_and_viewable(client, admin_user, pending_request):
    event = AuditEvent.objects.get(action="request.submitted")
    client.force_login(admin_user)
    changelist = text(client.get(reverse("admin:audit_auditevent_changelist")))
    assert "request.submitted" in changelist
    assert reverse("admin:audit_auditevent_add") not in changelist
    response = client.get(reverse("admin:audit_auditevent_change", args=[event.pk]))
    assert response.status_code == 200
    page = text(response)
    assert "request.submitted" in page
    assert event.hash in page
    assert 'name="_save"' not in page
    assert 'name="_continue"' not in page
    assert reverse("admin:audit_auditevent_delete", args=[event.pk]) not in page


def test_audit_events_cannot_be_changed(client, admin_user, pending_request):
    event = AuditEvent.objects.get(action="request.submitted")
    client.force_login(admin_user)
    response = client.post(
        reverse("admin:audit_auditevent_change", args=[event.pk]),
        {"action": "request.approved", "details": "{}", "object_id": "0", "_save": "Save"},
    )
    assert response.status_code == 403
    event.refresh_from_db()
    assert event.action == "request.submitted"
    assert event.details["ticket"] == "INC-4711"


def test_audit_events_cannot_be_deleted(client, admin_user, pending_request):
    event = AuditEvent.objects.get(action="request.submitted")
    client.force_login(admin_user)
    url = reverse("admin:audit_auditevent_delete", args=[event.pk])
    assert client.get(url).status_code == 403
    assert client.post(url, {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_audit_events_cannot_be_deleted_in_bulk(client, admin_user, pending_request):
    client.force_login(admin_user)
    changelist = reverse("admin:audit_auditevent_changelist")
    assert "delete_selected" not in text(client.get(changelist))
    ids = list(AuditEvent.objects.values_list("pk", flat=True))
    client.post(
        changelist,
        {"action": "delete_selected", "select_across": "0", "index": "0", "_selected_action": ids, "post": "yes"},
    )
    assert AuditEvent.objects.count() == len(ids)


def test_audit_events_cannot_be_added(client, admin_user, db):
    client.force_login(admin_user)
    assert client.get(reverse("admin:audit_auditevent_add")).status_code == 403
