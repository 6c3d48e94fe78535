"""The API's rate limits: bad tokens per client address, new requests per person (counters: accounts/ratelimit.py)."""

from __future__ import annotations

from django.conf import settings

from accounts import ratelimit

from .errors import rate_limited


def refuse_locked_out_address(ip: str) -> None:
    """Raise a 429 if `ip` sent JIT_API_AUTH_FAILURES_PER_MINUTE bad tokens in this minute."""
    # Checked before the token, so that a guesser learns nothing while locked out.
    wait = ratelimit.retry_after("auth-failure", ip, limit=settings.JIT_API_AUTH_FAILURES_PER_MINUTE, window=60)
    if wait:
        raise rate_limited(wait, "Too many failed token attempts from your address.")


def count_token_failure(ip: str) -> None:
    ratelimit.hit("auth-failure", ip, window=60)


def count_new_request(user) -> None:
    """Count one request `user` makes through the API; raise a 429 past JIT_API_REQUESTS_PER_HOUR."""
    count, left = ratelimit.hit("api-request", str(user.pk), window=3600)
    if count > settings.JIT_API_REQUESTS_PER_HOUR:
        raise rate_limited(left, f"At most {settings.JIT_API_REQUESTS_PER_HOUR} requests an hour through the API.")
