"""Every sign-in is audited; outside demo mode a password sign-in is the emergency path.

The emergency path says so, is throttled per username and address, and every failure is audited.
"""

import pytest
from django.core.cache import cache

from audit.models import AuditEvent

PASSPHRASE = "a-long-emergency-passphrase"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) emergency-test"


@pytest.fixture(autouse=True)
def fresh_counters():
    # The throttle counts in the cache, which outlives a test's database transaction.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def root(django_user_model, settings):
    settings.DEMO_MODE = False
    return django_user_model.objects.create_superuser("breakglass-admin", "ops@example.com", PASSPHRASE)


def admin_login(client, username, password, *, ip="203.0.113.7"):
    credentials = {"username": username, "password": password}
    return client.post("/admin/login/?next=/admin/", credentials, REMOTE_ADDR=ip, HTTP_USER_AGENT=BROWSER)


def signed_in(client):
    return client.get("/admin/").status_code == 200


def test_emergency_password_login_outside_demo_mode_is_audited(client, root):
    response = admin_login(client, "breakglass-admin", PASSPHRASE)
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="user.emergency_login")
    assert event.actor == root and event.details["method"] == "password"
    facts = event.details
    assert (facts["ip"], facts["user_agent"], facts["path"]) == ("203.0.113.7", BROWSER, "/admin/login/")


def test_demo_mode_password_login_is_an_ordinary_login_event(client, django_user_model):
    django_user_model.objects.create_user("ana", password="ana-demo-pass-123")
    response = client.post("/accounts/login/", {"login": "ana", "password": "ana-demo-pass-123"})
    assert response.status_code == 302
    assert AuditEvent.objects.get(action="user.login").details["method"] == "password (demo mode)"
    assert not AuditEvent.objects.filter(action="user.emergency_login").exists()


def test_a_failed_password_gives_no_session_and_is_audited(client, django_user_model):
    django_user_model.objects.create_user("ana", password="ana-demo-pass-123")
    client.post("/accounts/login/", {"login": "ana", "password": "wrong-guess-42"})
    assert client.get("/access/").status_code == 302
    assert not AuditEvent.objects.filter(action__in=["user.login", "user.emergency_login"]).exists()
    (failure,) = AuditEvent.objects.filter(action="user.login_failed")
    assert failure.details["user"] == "ana"


def test_a_failed_emergency_login_is_audited_with_username_address_and_browser_but_never_the_password(client, root):
    response = admin_login(client, "breakglass-admin", "wrong-guess-42")
    assert response.status_code == 200 and not signed_in(client)
    (failure,) = AuditEvent.objects.filter(action="user.login_failed")
    assert failure.actor is None
    assert failure.details == {
        "user": "breakglass-admin",
        "reason": "wrong username or password",
        "ip": "203.0.113.7",
        "user_agent": BROWSER,
        "path": "/admin/login/",
    }
    assert "wrong-guess-42" not in str(failure.details)


def test_a_guessed_username_that_does_not_exist_is_audited_too(client, root):
    admin_login(client, "admin", "admin")
    (failure,) = AuditEvent.objects.filter(action="user.login_failed")
    assert failure.details["user"] == "admin" and failure.details["ip"] == "203.0.113.7"


def test_after_too_many_failures_the_emergency_login_refuses_even_the_right_password(client, root, settings):
    settings.JIT_LOGIN_FAILURES = 3
    for guess in ("guess-1", "guess-2", "guess-3"):
        admin_login(client, "breakglass-admin", guess)
    response = admin_login(client, "breakglass-admin", PASSPHRASE)
    assert response.status_code == 200
    assert "Too many failed sign-in attempts for this username from your address. Wait" in response.content.decode()
    assert not signed_in(client)
    assert not AuditEvent.objects.filter(action="user.emergency_login").exists()
    failures = AuditEvent.objects.filter(action="user.login_failed").order_by("id")
    assert [f.details["reason"] for f in failures] == ["wrong username or password"] * 3 + ["throttled"]


def test_the_throttle_is_not_dodged_by_changing_the_case_of_the_username(client, root, settings):
    settings.JIT_LOGIN_FAILURES = 2
    admin_login(client, "breakglass-admin", "guess-1")
    admin_login(client, "BreakGlass-Admin", "guess-2")
    response = admin_login(client, "BREAKGLASS-ADMIN", "guess-3")
    assert "Too many failed sign-in attempts" in response.content.decode()


def test_a_stranger_guessing_does_not_lock_the_operator_out_from_another_address(client, root, settings):
    settings.JIT_LOGIN_FAILURES = 2
    for guess in ("guess-1", "guess-2", "guess-3"):
        admin_login(client, "breakglass-admin", guess, ip="198.51.100.66")
    response = admin_login(client, "breakglass-admin", PASSPHRASE, ip="203.0.113.7")
    assert response.status_code == 302 and signed_in(client)
    assert AuditEvent.objects.filter(action="user.emergency_login").count() == 1


def test_behind_a_proxy_the_throttle_counts_the_client_address_the_proxy_gives(client, root, settings):
    settings.JIT_LOGIN_FAILURES = 2
    settings.JIT_CLIENT_IP_HEADER = "X-Forwarded-For"
    proxy = {"REMOTE_ADDR": "10.0.0.2"}
    for guess in ("guess-1", "guess-2"):
        credentials = {"username": "breakglass-admin", "password": guess}
        client.post("/admin/login/", credentials, **proxy, HTTP_X_FORWARDED_FOR="198.51.100.66")
    # Another client behind the same proxy signs in.
    credentials = {"username": "breakglass-admin", "password": PASSPHRASE}
    response = client.post("/admin/login/?next=/admin/", credentials, **proxy, HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert response.status_code == 302
    assert {f.details["ip"] for f in AuditEvent.objects.filter(action="user.login_failed")} == {"198.51.100.66"}


def test_the_right_password_of_an_account_that_may_not_use_the_admin_is_a_failure_there(
    client, root, django_user_model
):
    django_user_model.objects.create_user("ana", password="ana-demo-pass-123")
    response = admin_login(client, "ana", "ana-demo-pass-123")
    assert response.status_code == 200 and not signed_in(client)
    (failure,) = AuditEvent.objects.filter(action="user.login_failed")
    assert (failure.details["user"], failure.details["reason"]) == ("ana", "not allowed in the admin")
