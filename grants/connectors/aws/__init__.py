"""AWS: temporary STS credentials for a role (connector.py)."""

from .connector import AWSConnector

__all__ = ["AWSConnector"]
