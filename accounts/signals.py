"""Signals of the identity app; apps above it subscribe (accounts imports none of them)."""

from django.contrib.auth.signals import user_logged_in
from django.dispatch import Signal, receiver

# Sent with `user` and `removed` (group names) when a login or refresh shows lost groups.
groups_removed = Signal()
# Sent with `user` and `reason` when the IdP no longer accepts an account and the portal deactivated it.
user_deactivated = Signal()


@receiver(user_logged_in)
def record_login(sender, request, user, **kwargs):
    from django.conf import settings

    import audit

    if getattr(request, "_jit_sso", False):
        action, method = "user.login", "sso"
    elif settings.DEMO_MODE:
        action, method = "user.login", "password (demo mode)"
    else:
        # The emergency path: a superuser made on the command line, using the admin.
        action, method = "user.emergency_login", "password"
    audit.record(action, actor=user, obj=user, details={"method": method, "user": user.username, "path": request.path if request else ""})
