from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The JSON API v1 (an edge: no models; writes through grants.lifecycle, reads through grants.selectors)."""

    name = "api"
    verbose_name = "API"
