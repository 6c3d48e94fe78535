from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self):
        from accounts.signals import emergency_login  # noqa: PLC0415 (ready(): the models load after apps.py)
        from grants import events  # noqa: PLC0415 (ready(): the models load after apps.py)

        from . import subscriptions  # noqa: PLC0415 (ready(): the models load after apps.py)
        from .channels import REGISTRY, channel_class  # noqa: PLC0415 (ready(): the models load after apps.py)

        for event, handler in subscriptions.HANDLERS.items():
            events.subscribe(event, handler)
        for kind in REGISTRY:
            events.add_route_kind(kind, channel_class(kind).address_error)
        emergency_login.connect(
            subscriptions.on_emergency_login, dispatch_uid="notifications.tell_security_of_emergency_login"
        )
