"""Redis: one ACL user per grant (connector.py)."""

from .connector import RedisConnector

__all__ = ["RedisConnector"]
