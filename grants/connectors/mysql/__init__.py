"""MySQL / MariaDB: one account per grant (connector.py)."""

from .connector import MySQLConnector

__all__ = ["MySQLConnector"]
