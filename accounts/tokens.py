"""Personal API tokens: made and revoked by their owner, kept only as a SHA-256 hash.

A token is `jit_` followed by 43 random URL-safe characters (256 bits), so
a plain SHA-256 is enough: nobody can guess a preimage, and a slow password
hash would only slow down every API call. Authentication looks the token up
by its hash, so the secret is never compared byte by byte and its timing
tells an attacker nothing about it.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets

from django.conf import settings
from django.db import transaction
from django.utils import timezone

import audit

from .models import ApiToken

PREFIX = "jit_"
PREFIX_SHOWN = 12  # "jit_" and 8 random characters, to recognise a token in a list
# last_used_at is written at most this often per token, not on every call of a polling client.
LAST_USED_PRECISION = datetime.timedelta(minutes=1)


class InvalidTokenError(Exception):
    """The presented token is unknown, expired, revoked, or its owner is disabled."""


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _details(token: ApiToken) -> dict:
    return {"name": token.name, "prefix": token.prefix, "expires_at": token.expires_at, "user": token.user.username}


def create_token(*, actor, name: str, days: int) -> tuple[ApiToken, str]:
    """Make a token for `actor` valid for `days`; return it and its secret, which is never stored."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValueError("A token needs a name of at most 100 characters.")
    if not 1 <= days <= settings.JIT_API_TOKEN_MAX_DAYS:
        raise ValueError(f"A token expires after 1 to {settings.JIT_API_TOKEN_MAX_DAYS} days.")
    secret = PREFIX + secrets.token_urlsafe(32)
    now = timezone.now()
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=actor,
            name=name,
            prefix=secret[:PREFIX_SHOWN],
            digest=digest(secret),
            created_at=now,
            expires_at=now + datetime.timedelta(days=days),
        )
        audit.record("token.created", actor=actor, obj=token, details=_details(token))
    return token, secret


def revoke_token(token_id, *, actor) -> ApiToken:
    """Revoke one of `actor`'s own tokens; ApiToken.DoesNotExist for anyone else's. Revoking twice changes nothing."""
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().select_related("user").get(pk=token_id, user=actor)
        if token.revoked_at is None:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
            audit.record("token.revoked", actor=actor, obj=token, details=_details(token))
    return token


def own_tokens(user):
    return ApiToken.objects.filter(user=user).order_by("-created_at")


def authenticate(secret: str) -> ApiToken:
    """Return the usable token whose secret this is (its `user` loaded), or raise InvalidTokenError."""
    secret = (secret or "").strip()
    if not secret.startswith(PREFIX) or len(secret) > 200:
        raise InvalidTokenError("This is not a jitportal API token (they start with jit_).")
    hashed = digest(secret)
    token = ApiToken.objects.select_related("user").filter(digest=hashed).first()
    if token is None or not hmac.compare_digest(token.digest, hashed):
        raise InvalidTokenError("Unknown API token.")
    now = timezone.now()
    if token.revoked_at is not None:
        raise InvalidTokenError("This API token was revoked.")
    if token.expires_at <= now:
        raise InvalidTokenError(
            f"This API token expired at {token.expires_at.astimezone(datetime.UTC):%Y-%m-%d %H:%M} UTC; create "
            "a new one."
        )
    if not token.user.is_active:
        raise InvalidTokenError("The account of this API token is disabled.")
    if token.last_used_at is None or token.last_used_at < now - LAST_USED_PRECISION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
