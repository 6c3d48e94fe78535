"""Fixed-window counters in Django's cache, for the API's rate limits and the admin login's, and the client address.

`cache.add` creates a window's counter only if it is missing and `cache.incr`
is atomic on Redis and Memcached, so several processes sharing such a cache
count together. The default local-memory cache counts per process: fine for
one web process and for tests, too lenient with several (README).
"""

from __future__ import annotations

import math
import time

from django.conf import settings
from django.core.cache import cache


def client_ip(request) -> str:
    """Return the client's address: REMOTE_ADDR, or the last value of JIT_CLIENT_IP_HEADER behind a proxy."""
    if settings.JIT_CLIENT_IP_HEADER:
        last = request.headers.get(settings.JIT_CLIENT_IP_HEADER, "").split(",")[-1].strip()
        if last:
            return last
    return request.META.get("REMOTE_ADDR", "")


def _key(scope: str, ident: str, window: int, now: float) -> tuple[str, int]:
    start = int(now // window) * window
    return f"jit-rl:{scope}:{ident}:{start}", start + window


def retry_after(scope: str, ident: str, *, limit: int, window: int, now: float | None = None) -> int | None:
    """Return the seconds until `ident` may try again if it has used up `limit` in this window, else None."""
    now = time.time() if now is None else now
    key, end = _key(scope, ident, window, now)
    if (cache.get(key) or 0) >= limit:
        return max(1, math.ceil(end - now))
    return None


def hit(scope: str, ident: str, *, window: int, now: float | None = None) -> tuple[int, int]:
    """Count one attempt of `ident` in the current window; return
    the count so far and the seconds the window has left."""
    now = time.time() if now is None else now
    key, end = _key(scope, ident, window, now)
    left = max(1, math.ceil(end - now))
    # The counter outlives its window a little so that a late incr finds it.
    cache.add(key, 0, timeout=left + 5)
    try:
        return cache.incr(key), left
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=left + 5)
        return 1, left
