"""Changes made in the Django admin reach the trail, not only the admin's own editable log."""

from django.contrib.auth.models import Group

from audit.models import AuditEvent


def test_making_someone_superuser_in_the_admin_is_in_the_trail(client, django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "root-password-123")
    ana = django_user_model.objects.create_user("ana", "ana@example.com", "ana-password-123")
    approvers = Group.objects.create(name="db-approvers")
    client.force_login(root)

    page = client.get(f"/admin/accounts/user/{ana.pk}/change/")
    form = page.context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and not isinstance(v, (list, tuple))}
    data.update(
        {
            "username": "ana",
            "is_superuser": "on",
            "is_active": "on",
            "groups": [approvers.pk],
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "_save": "Save",
        }
    )
    for name in list(data):
        if name in ("last_login", "date_joined", "password", "manager"):
            data.pop(name)
    response = client.post(f"/admin/accounts/user/{ana.pk}/change/", data)

    assert response.status_code == 302, response.content.decode()[:2000]
    ana.refresh_from_db()
    assert ana.is_superuser
    event = AuditEvent.objects.get(action="admin.change")
    assert event.actor_id == root.pk
    assert event.details["model"] == "accounts.user" and event.details["object_id"] == str(ana.pk)
    assert "Superuser status" in event.details["change"] and "Groups" in event.details["change"]
