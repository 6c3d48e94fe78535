"""OpenBao / HashiCorp Vault: a token per grant (connector.py)."""

from .connector import OpenBaoConnector

__all__ = ["OpenBaoConnector"]
