"""SSH: user certificates (connector.py), the portal's certificate authority (ca.py), the KRL hosts fetch (views.py)."""

from .connector import SSHConnector

__all__ = ["SSHConnector"]
