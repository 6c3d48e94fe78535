"""Every sign-in is audited; outside demo mode a password sign-in is the emergency path and says so."""

from audit.models import AuditEvent


def admin_login(client, username, password):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password})


def test_emergency_password_login_outside_demo_mode_is_audited(client, django_user_model, settings):
    settings.DEMO_MODE = False
    root = django_user_model.objects.create_superuser("breakglass-admin", "ops@example.com", "a-long-emergency-passphrase")
    response = admin_login(client, "breakglass-admin", "a-long-emergency-passphrase")
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="user.emergency_login")
    assert event.actor == root and event.details["method"] == "password"


def test_demo_mode_password_login_is_an_ordinary_login_event(client, django_user_model):
    django_user_model.objects.create_user("ana", password="ana-demo-pass-123")
    response = client.post("/accounts/login/", {"login": "ana", "password": "ana-demo-pass-123"})
    assert response.status_code == 302
    assert AuditEvent.objects.get(action="user.login").details["method"] == "password (demo mode)"
    assert not AuditEvent.objects.filter(action="user.emergency_login").exists()


def test_a_failed_password_gives_no_session(client, django_user_model):
    django_user_model.objects.create_user("ana", password="ana-demo-pass-123")
    client.post("/accounts/login/", {"login": "ana", "password": "wrong"})
    assert client.get("/access/").status_code == 302
    assert not AuditEvent.objects.filter(action__startswith="user.").exists()
