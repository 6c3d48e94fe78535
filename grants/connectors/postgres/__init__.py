"""PostgreSQL: one LOGIN role per grant (connector.py)."""

from .connector import PostgresConnector

__all__ = ["PostgresConnector"]
