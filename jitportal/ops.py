"""Endpoints for load balancers and monitoring: /healthz, /readyz, /metrics.

No session, no user, no Host check (`jitportal.middleware.ProbeMiddleware`
runs them first); each answers with a handful of cheap queries.
"""

import datetime
import hmac
import logging
import time

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from prometheus_client.exposition import choose_encoder

from .metrics import registry
from .queues import broker, last_sweep

log = logging.getLogger(__name__)

STARTED = time.monotonic()
# The minute sweep ("jitportal: sweep") proves that the scheduler and at
# least one worker are alive; give it this long before calling them gone.
WORKERS_GRACE = datetime.timedelta(minutes=3)


def probe(view):
    """Mark a view to be answered before host checks, HTTPS redirects, sessions and auth."""
    view = never_cache(view)
    view.probe = True
    return view


class NotReady(Exception):
    """A check failed for a reason we can state (anything else shows only its type)."""


@probe
def healthz(request):
    """The process is up and answers; touches nothing else."""
    return HttpResponse("ok\n", content_type="text/plain")


def _check_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "ok"


def _check_broker():
    # The ORM broker's ping() is always True, so ask it for its queue
    # (a query on its table); the Redis broker's ping() really pings.
    b = broker()
    if not b.ping():
        raise NotReady("the broker did not answer")
    return f"ok, {b.queue_size() or 0} tasks queued"


def _check_workers():
    last = last_sweep()
    now = timezone.now()
    if last is not None and now - last <= WORKERS_GRACE:
        return f"ok, the minute sweep finished {int((now - last).total_seconds())} s ago"
    if last is None and time.monotonic() - STARTED < WORKERS_GRACE.total_seconds():
        return "starting: no sweep has run yet"
    when = "never" if last is None else f"{int((now - last).total_seconds())} s ago"
    raise NotReady(f"no worker seen: the minute sweep last finished {when} (is `manage.py qcluster` running?)")


CHECKS = {"database": _check_database, "broker": _check_broker, "workers": _check_workers}


@probe
def readyz(request):
    """200 when the database, the broker and the workers are fine; 503 naming what is not."""
    checks, failed = {}, []
    for name, check in CHECKS.items():
        try:
            checks[name] = check()
        except NotReady as exc:
            checks[name] = f"failed: {exc}"
            failed.append(name)
        except Exception as exc:  # noqa: BLE001 (any failing check is a 503 naming it)
            # The endpoint answers anyone: name the error, keep addresses and
            # messages for the log.
            log.warning("Readiness check %s failed: %s", name, exc)
            checks[name] = f"failed: {type(exc).__name__}"
            failed.append(name)
    body = {"status": "fail" if failed else "ok", "failed": failed, "checks": checks}
    return JsonResponse(body, status=503 if failed else 200)


def _metrics_allowed(request) -> bool:
    """Return whether the request may read /metrics: it carries METRICS_TOKEN, or none is needed."""
    token = settings.METRICS_TOKEN
    if not token:
        if settings.DEMO_MODE or settings.METRICS_PUBLIC:
            return True
        # The page names every target and its live grants, whatever the Host header: not for anyone who asks.
        log.warning(
            "/metrics refused: set METRICS_TOKEN (or METRICS_TOKEN_FILE), or METRICS_PUBLIC=true to serve it "
            "without a token."
        )
        return False
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


@probe
def metrics(request):
    """Prometheus metrics, computed from the database (see jitportal/metrics.py)."""
    if not _metrics_allowed(request):
        response = HttpResponse("A valid bearer token is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    try:
        body = encoder(registry)
    except DatabaseError as exc:
        log.warning("Metrics unavailable: %s", exc)
        return HttpResponse("The database is unavailable.\n", status=503, content_type="text/plain")
    return HttpResponse(body, content_type=content_type)
