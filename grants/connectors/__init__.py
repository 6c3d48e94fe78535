"""Connectors, one package per target kind, registered by kind name."""

from django.utils.module_loading import import_string

from .base import Connector, ConnectorError, Provisioned, RequestField

REGISTRY = {
    "postgres": "grants.connectors.postgres.PostgresConnector",
    "mysql": "grants.connectors.mysql.MySQLConnector",
    "aws": "grants.connectors.aws.AWSConnector",
    "ssh": "grants.connectors.ssh.SSHConnector",
    "openbao": "grants.connectors.openbao.OpenBaoConnector",
    "redis": "grants.connectors.redis.RedisConnector",
    "ldap": "grants.connectors.ldap.LDAPConnector",
}
# A kind's own endpoints (such as the SSH KRL hosts fetch), by kind: URL patterns that join the grants pages'.
URLS = {
    "ssh": "grants.connectors.ssh.urls.urlpatterns",
}


def kind_choices():
    # A callable, so that registering a connector needs no migration.
    return [(kind, kind) for kind in REGISTRY]


def get_connector(target) -> Connector:
    try:
        path = REGISTRY[target.kind]
    except KeyError:
        raise ConnectorError(f"Unknown target kind {target.kind!r}.", permanent=True) from None
    return import_string(path)(target)


def request_fields(kinds) -> dict[str, tuple[RequestField, set[str]]]:
    """Return the extra request fields the target `kinds` take: name -> (field, the kinds that take it)."""
    fields: dict[str, tuple[RequestField, set[str]]] = {}
    for kind in sorted(set(kinds)):
        if kind not in REGISTRY:
            continue
        for name, field in import_string(REGISTRY[kind]).request_fields.items():
            fields.setdefault(name, (field, set()))[1].add(kind)
    return fields


def urlpatterns() -> list:
    """Return the URL patterns of the registered kinds' own endpoints (`URLS`)."""
    return [pattern for kind, path in URLS.items() if kind in REGISTRY for pattern in import_string(path)]


__all__ = [
    "Connector",
    "ConnectorError",
    "Provisioned",
    "REGISTRY",
    "RequestField",
    "get_connector",
    "kind_choices",
    "request_fields",
    "urlpatterns",
]
