"""Connectors, one module per target kind, registered by kind name."""

from django.utils.module_loading import import_string

from .base import Connector, ConnectorError, Provisioned

REGISTRY = {
    "postgres": "grants.connectors.postgres.PostgresConnector",
    "mysql": "grants.connectors.mysql.MySQLConnector",
    "aws": "grants.connectors.aws.AWSConnector",
    "ssh": "grants.connectors.ssh.SSHConnector",
    "openbao": "grants.connectors.openbao.OpenBaoConnector",
    "redis": "grants.connectors.redis.RedisConnector",
    "ldap": "grants.connectors.ldap.LDAPConnector",
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


__all__ = ["Connector", "ConnectorError", "Provisioned", "REGISTRY", "kind_choices", "get_connector"]
