from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit trail"

    def ready(self):
        from . import checks  # noqa: F401 - registers the deploy checks
        from .heads import signing_key

        # A bad key stops every process at start (ImproperlyConfigured), not the hourly export an hour later.
        signing_key()
