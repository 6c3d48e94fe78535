"""Signals of the identity app; apps above it subscribe (accounts imports none of them)."""

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import Signal, receiver

import audit

from .login import record_login_failure, request_facts

# Sent with `user` and `removed` (group names) when a login or refresh shows lost groups.
groups_removed = Signal()
# Sent with `user` and `reason` when the IdP no longer accepts an account and the portal deactivated it.
user_deactivated = Signal()
# Sent with `user` and `event` (its audit event) after every emergency password login, for the security contacts.
emergency_login = Signal()


@receiver(user_logged_in)
def record_login(sender, request, user, **kwargs):
    if getattr(request, "_jit_sso", False):
        action, method = "user.login", "sso"
    elif settings.DEMO_MODE:
        action, method = "user.login", "password (demo mode)"
    else:
        # The emergency path: a superuser made on the command line, using the admin.
        action, method = "user.emergency_login", "password"
    details = {"method": method, "user": user.username, **request_facts(request)}
    event = audit.record(action, actor=user, obj=user, details=details)
    if action == "user.emergency_login":
        emergency_login.send(sender=type(user), user=user, event=event)


@receiver(user_login_failed)
def audit_login_failure(sender, credentials, request=None, **kwargs):
    # Django has masked the password in `credentials` already; only the username is kept.
    username = credentials.get("username") or credentials.get("email") or ""
    record_login_failure(request, str(username), reason="wrong username or password")
