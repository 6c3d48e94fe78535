from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_migrate, post_save


class GrantsConfig(AppConfig):
    name = "grants"
    verbose_name = "Access"

    def ready(self):
        from accounts.signals import groups_removed  # noqa: PLC0415 (ready(): the models load after apps.py)

        groups_removed.connect(_on_groups_removed, dispatch_uid="grants.enforce_group_policy")
        # Any deactivation (the admin's "active" box, the IdP sync's `user_deactivated`) saves the user row.
        post_save.connect(_on_user_saved, sender=settings.AUTH_USER_MODEL, dispatch_uid="grants.deactivated_user")
        post_migrate.connect(_ensure_auditor_group, sender=self, dispatch_uid="grants.auditor_group")


def _on_groups_removed(sender, user, removed, **kwargs):
    # Wiring only: the rule lives in the lifecycle.
    from .lifecycle import enforce_group_policy  # noqa: PLC0415 (the models load after apps.py; the lifecycle imports them)

    enforce_group_policy(user)


def _on_user_saved(sender, instance, created, update_fields=None, **kwargs):
    # Wiring only: a deactivated account (the admin's "active" box, an IdP
    # sync) keeps nothing; the lifecycle cancels and revokes.
    if instance.is_active or created or kwargs.get("raw"):
        return
    if update_fields is not None and "is_active" not in update_fields:
        return
    from .lifecycle import enforce_group_policy  # noqa: PLC0415 (the models load after apps.py; the lifecycle imports them)

    enforce_group_policy(instance)


AUDITOR_PERMISSIONS = [
    "view_auditevent",
    "view_grant",
    "view_accessrequest",
    "view_accessprofile",
    "view_target",
    "view_user",
    "open_accessreview",  # auditors open access review campaigns (grants/reviews.py)
    "view_accessreview",
    "view_accessreviewitem",
    "view_eligibilityremoval",
    "view_reviewschedule",
]


def _ensure_auditor_group(**kwargs):
    """Give the auditors group (JIT_AUDITOR_GROUP) read-only access to the trail and the catalog in the admin."""
    from django.contrib.auth.models import Group, Permission  # noqa: PLC0415 (ready(): the models load after apps.py)

    group, _ = Group.objects.get_or_create(name=settings.JIT_AUDITOR_GROUP)
    group.permissions.add(*Permission.objects.filter(codename__in=AUDITOR_PERMISSIONS))
