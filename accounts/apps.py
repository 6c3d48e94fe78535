from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "People"

    def ready(self):
        from . import signals  # noqa: F401, PLC0415 (connects the login receiver; ready(): the models load after apps.py)
