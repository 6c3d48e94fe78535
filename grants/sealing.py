"""Seal credentials at rest until their holder has seen them once."""

import base64
import hashlib
import json

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


def _fernet() -> Fernet:
    key = hashlib.sha256(b"jitportal-credentials:" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def seal(credentials: dict) -> str:
    return _fernet().encrypt(json.dumps(credentials).encode()).decode()


def unseal(token: str) -> dict | None:
    """Return the credentials, or None if SECRET_KEY changed since they were sealed."""
    try:
        return json.loads(_fernet().decrypt(token.encode()))
    except InvalidToken:
        return None
