"""Connectors, one module per target kind, registered by kind name."""

from django.utils.module_loading import import_string

from .base import Connector, ConnectorError, Provisioned

REGISTRY = {
    "postgres": "grants.connectors.postgres.PostgresConnector",
}

KIND_CHOICES = [(kind, kind) for kind in REGISTRY]


def get_connector(target) -> Connector:
    try:
        path = REGISTRY[target.kind]
    except KeyError:
        raise ConnectorError(f"Unknown target kind {target.kind!r}.", permanent=True) from None
    return import_string(path)(target)


__all__ = ["Connector", "ConnectorError", "Provisioned", "REGISTRY", "KIND_CHOICES", "get_connector"]
