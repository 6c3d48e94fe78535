"""Password sign-in: throttled per username and address, and every failure audited.

Outside demo mode the only password sign-in is the Django admin's, the
emergency path for when the identity provider is down (README "Emergency
access"). Its failures are counted per username and client address in the
cache (`accounts/ratelimit.py`): after JIT_LOGIN_FAILURES of them within a
JIT_LOGIN_FAILURE_WINDOW-second window the admin login refuses every attempt
from there, the right password included, until the window ends. Per username
*and* address, so that a stranger guessing cannot lock the operators out of
their own emergency account from the machine they use. Every failure,
refused ones included, is an audit event `user.login_failed` with the
username tried, the address and the browser, never the password.
"""

from __future__ import annotations

import hashlib

from django.conf import settings

import audit

from . import ratelimit

SCOPE = "login-failure"
# Typed by anyone: the trail keeps a bounded amount of it.
MAX_USERNAME, MAX_USER_AGENT = 150, 300


def _ident(request, username: str) -> str:
    # Hashed: a username may hold characters a cache key may not (memcached refuses spaces).
    # Casefolded: the allauth backend finds a username whatever its case.
    raw = f"{username.casefold()}\0{ratelimit.client_ip(request) if request else ''}"
    return hashlib.sha256(raw.encode()).hexdigest()


def request_facts(request) -> dict:
    """Return where a sign-in came from, for its audit event."""
    if request is None:
        return {"ip": "", "user_agent": "", "path": ""}
    return {
        "ip": ratelimit.client_ip(request),
        "user_agent": request.headers.get("User-Agent", "")[:MAX_USER_AGENT],
        "path": request.path,
    }


def login_wait(request, username: str) -> int | None:
    """Return the seconds until `username` may try a password again from this address, or None if it may now."""
    return ratelimit.retry_after(
        SCOPE, _ident(request, username), limit=settings.JIT_LOGIN_FAILURES, window=settings.JIT_LOGIN_FAILURE_WINDOW
    )


def count_login_failure(request, username: str) -> None:
    """Count one wrong password of `username` from this address towards the throttle."""
    ratelimit.hit(SCOPE, _ident(request, username), window=settings.JIT_LOGIN_FAILURE_WINDOW)


def record_login_failure(request, username: str, *, reason: str) -> None:
    """Count one failed password sign-in towards the throttle and audit it."""
    count_login_failure(request, username)
    details = {"user": username[:MAX_USERNAME], "reason": reason, **request_facts(request)}
    audit.record("user.login_failed", details=details)


def wait_message(seconds: int) -> str:
    minutes = -(-seconds // 60)
    wait = f"{minutes} minutes" if seconds > 60 else f"{seconds} second{'s' if seconds != 1 else ''}"
    return (
        f"Too many failed sign-in attempts for this username from your address. Wait {wait} and try again; "
        "until then no password is accepted, the right one neither."
    )
