from django.apps import AppConfig
from django.db.models.signals import post_save

from . import record


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit trail"

    def ready(self):
        from . import checks  # noqa: F401, PLC0415 (registers the deploy checks; ready(): the models load after apps.py)
        from .heads import signing_key  # noqa: PLC0415 (ready(): the models load after apps.py)

        # A bad key stops every process at start (ImproperlyConfigured), not the hourly export an hour later.
        signing_key()
        from .sinks import configured_sinks  # noqa: PLC0415 (ready(): the models load after apps.py)

        configured_sinks()  # likewise a bad AUDIT_SINKS

        from django.contrib.admin.models import LogEntry  # noqa: PLC0415 (ready(): the models load after apps.py)

        post_save.connect(_record_admin_change, sender=LogEntry, dispatch_uid="audit.admin_change")


def _record_admin_change(sender, instance, created, **kwargs):
    """Copy every Django admin change into the trail: the admin's own log is an ordinary, editable table.

    Granting superuser, adding someone to a group or editing a target in the
    admin is a change of rights like any other, so it is evidence too.
    """
    if not created or (instance.action_flag == 2 and instance.change_message in ("", "[]")):
        return  # a save that changed no field changed nothing

    flag = {1: "added", 2: "changed", 3: "deleted"}.get(instance.action_flag, str(instance.action_flag))
    content_type = instance.content_type
    record(
        "admin.change",
        actor=instance.user,
        details={
            "action": flag,
            "model": f"{content_type.app_label}.{content_type.model}" if content_type else "",
            "object_id": str(instance.object_id or ""),
            "object": instance.object_repr,
            "change": instance.get_change_message(),
        },
    )
