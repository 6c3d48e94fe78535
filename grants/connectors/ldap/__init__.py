"""LDAP: temporary membership of directory groups (connector.py)."""

from .connector import LDAPConnector

__all__ = ["LDAPConnector"]
