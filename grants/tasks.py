"""Background work: thin functions that take ids and call the lifecycle.

Every task is idempotent and safe to run in several workers at once: the
lifecycle claims rows with `select_for_update(skip_locked=True)` and a task
that finds nothing to do returns quietly.
"""

import datetime
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_q.tasks import async_task

from . import events, lifecycle, reviews
from .connectors import ConnectorError, get_connector
from .models import AccessRequest, Grant, Target

log = logging.getLogger(__name__)

REMIND_BEFORE = datetime.timedelta(minutes=10)


def provision(grant_id):
    lifecycle.provision_grant(grant_id)


def extend_on_target(grant_id):
    lifecycle.extend_on_target(grant_id)


def complete_revocation(grant_id):
    lifecycle.complete_revocation(grant_id)


def clean_up_failed(grant_id):
    """Remove whatever a failed provisioning may have left on the target (best effort)."""
    grant = Grant.objects.select_related("profile__target").get(pk=grant_id)
    try:
        with get_connector(grant.profile.target) as connector:
            connector.revoke(grant)
    except ConnectorError as exc:
        log.info("Clean-up of failed grant %s: %s", grant_id, exc.message)


# At most this many targets are worked on at once in a pass, each in its own thread.
MAX_TARGET_THREADS = 8
# While its threads run, a pass looks this often for targets with newly due work.
LOOK_EVERY = 0.2
IDLE_PAUSE = 1.0


def pass_budget() -> float:
    """Return how long a pass may keep taking new work (seconds): half of django-q's task timeout.

    A pass stops between batches, so the other half is left for the batch
    under way (a hung target's connect timeout, a slow statement).
    """
    return settings.Q_CLUSTER.get("timeout", 120) / 2


def due_work(now) -> Q:
    """Return the grants with target work due at `now`: expired, a revocation or provisioning attempt due, a lost task.

    `next_attempt_at` is when a grant's pending target work is due (a retry's
    backoff, or `RETRY_GRACE` after a task was handed the work): past it, the
    task failed, was lost with its worker, or met the row locked by another
    worker, and a pass takes it up.
    """
    lost = now - lifecycle.RETRY_GRACE
    return (
        Q(status=Grant.Status.ACTIVE, expires_at__lte=now)
        | Q(status__in=[Grant.Status.REVOKING, Grant.Status.ACTIVE, Grant.Status.SCHEDULED], next_attempt_at__lte=now)
        | Q(status=Grant.Status.SCHEDULED, next_attempt_at__isnull=True)
        & (Q(not_before__isnull=True, created_at__lte=lost) | Q(not_before__lte=lost))
    )


def expire_due() -> int:
    """Do what is due on every target: revoke what expired, retry revocations, provisioning and extensions.

    Work is done per target, each in its own thread (unless called inside a
    transaction, whose rows other threads could not see), and the pass keeps
    looking for targets with newly due work while its threads run: a target
    that hangs holds up its own thread only, never another target's grants,
    even when every worker's pass waits on it. A target that fails once is
    remembered by its thread (the connector's circuit breaker): its other
    grants fail at once and are retried with backoff. The longest waiting
    work goes first, and the pass takes no new work after `pass_budget()`,
    so it ends well within django-q's task timeout. Return how many
    expiries it began.
    """
    deadline = time.monotonic() + pass_budget()
    if connection.in_atomic_block:
        return sum(_pass_on_target(target_id, deadline) for target_id in _due_targets())
    begun = 0
    running, idle_until = {}, {}
    with ThreadPoolExecutor(max_workers=MAX_TARGET_THREADS, thread_name_prefix="pass") as pool:
        while True:
            for target_id, future in list(running.items()):
                if future.done():
                    del running[target_id]
                    done = future.result()
                    begun += done
                    # Due work that another worker holds is not ours: do not look again at once.
                    idle_until[target_id] = time.monotonic() + (0 if done else IDLE_PAUSE)
            if time.monotonic() < deadline:
                for target_id in _due_targets():
                    if (
                        target_id not in running
                        and idle_until.get(target_id, 0) <= time.monotonic()
                        and len(running) < MAX_TARGET_THREADS
                    ):
                        running[target_id] = pool.submit(_in_thread, _pass_on_target, target_id, deadline)
            if not running:
                return begun
            time.sleep(LOOK_EVERY)


def _due_targets() -> list[int]:
    return list(
        Grant.objects.filter(due_work(timezone.now()))
        .values_list("profile__target_id", flat=True)
        .distinct()
        .order_by()
    )


def _in_thread(func, *args):
    try:
        return func(*args)
    except Exception:
        log.exception("A pass over target %s failed", args[0])
        return 0
    finally:
        connection.close()  # this thread's own database connection


def _pass_on_target(target_id: int, deadline: float) -> int:
    connectors = {}
    begun = 0
    limit = settings.JIT_EXPIRY_BATCH
    try:
        while time.monotonic() < deadline:
            try:
                ids = lifecycle.revoke_due_expiries(target_id=target_id, limit=limit, connectors=connectors)
            except Exception:
                # The batch was rolled back: its grants are active and past expiry, due for the next pass
                # (the timer's, within REPEAT_EVERY). Not again in this one, which would only fail again.
                log.exception("Revoking the due expiries of target %s failed", target_id)
                break
            if not ids:
                break
            begun += len(ids)
            limit = next_batch(limit, taken=len(ids))
        while time.monotonic() < deadline:
            try:
                if not lifecycle.retry_revocations(
                    target_id=target_id, limit=settings.JIT_EXPIRY_BATCH, connectors=connectors
                ):
                    break
            except Exception:
                log.exception("Retrying revocations on target %s failed", target_id)
                break
        now = timezone.now()
        due = Grant.objects.filter(due_work(now), profile__target_id=target_id)
        provisioning = due.filter(status=Grant.Status.SCHEDULED).order_by(
            Coalesce("next_attempt_at", "not_before", "created_at"), "pk"
        )
        extensions = due.filter(status=Grant.Status.ACTIVE, expires_at__gt=now, next_attempt_at__isnull=False).order_by(
            "next_attempt_at", "pk"
        )
        for work, grant_ids in ((lifecycle.provision_grant, provisioning), (lifecycle.extend_on_target, extensions)):
            for grant_id in list(grant_ids.values_list("pk", flat=True)[:500]):
                if time.monotonic() >= deadline:
                    break
                try:
                    work(grant_id, connectors=connectors)
                except Exception:
                    log.exception("%s of grant %s failed", work.__name__, grant_id)
    finally:
        for connector in connectors.values():
            connector.close()
    return begun


def next_batch(limit: int, *, taken: int) -> int:
    """Return how many expiries a pass takes next: twice as many after a full batch, up to JIT_EXPIRY_BATCH_MAX.

    A quiet minute's few expiries go in small batches, each revoked as soon
    as possible; a burst (a full batch: more is waiting) is taken in ever
    larger ones, because a batch's round trips to the target, its commits and
    its audit append cost about the same for 25 grants as for 400.
    """
    if taken < limit:
        return settings.JIT_EXPIRY_BATCH
    return max(settings.JIT_EXPIRY_BATCH, min(limit * 2, settings.JIT_EXPIRY_BATCH_MAX))


def enqueue_expiries(due_count: int):
    """Enqueue enough `expire_due` tasks that the workers share a burst of expiries."""
    workers = settings.Q_CLUSTER.get("workers", 1)
    for _ in range(max(1, min(workers, math.ceil(due_count / settings.JIT_EXPIRY_BATCH)))):
        async_task("grants.tasks.expire_due", group="expire_due")


def sweep():
    """Make what should be true now true: a pass over due work, lapse requests, remind holders."""
    now = timezone.now()
    expire_due()
    remind_expiring(now)
    lifecycle.lapse_stale_requests(now)


def run_access_reviews(now=None) -> dict:
    """Open the catalog's scheduled campaigns, remind the reviewers of those near their due date, close those due.

    A django-q2 schedule (every 15 minutes); each step is idempotent.
    """
    return {
        "opened": reviews.open_scheduled_reviews(now),
        "reminded": reviews.remind_reviewers(now),
        "closed": reviews.close_due_reviews(now),
    }


def remind_and_escalate():
    """Remind and escalate undecided approval steps (a django-q2 schedule, every minute)."""
    return lifecycle.remind_and_escalate()


def remind_expiring(now=None) -> list[int]:
    """Announce `expiry_soon` for each active grant that ends within ten minutes and was not reminded of this expiry.

    The claim is a compare-and-set on `reminded_at`, so two sweepers send
    one reminder; a grant extended after its reminder is reminded again
    before its new expiry.
    """
    now = now or timezone.now()
    not_reminded = Q(reminded_at__isnull=True) | Q(reminded_at__lt=F("expires_at") - REMIND_BEFORE)
    due = Grant.objects.filter(
        not_reminded, status=Grant.Status.ACTIVE, expires_at__gt=now, expires_at__lte=now + REMIND_BEFORE
    )
    claimed = []
    for grant_id in due.values_list("pk", flat=True):
        if Grant.objects.filter(not_reminded, pk=grant_id).update(reminded_at=now) == 1:
            claimed.append(grant_id)
            events.announce("expiry_soon", grant_id=grant_id)
    return claimed


def check_targets():
    """Record whether each target is reachable, so pages can say so before anyone waits."""
    for target in Target.objects.all():
        check_target(target)


def check_target(target: Target):
    try:
        with get_connector(target) as connector:
            warnings = connector.check()
    except ConnectorError as exc:
        health, message = Target.Health.UNREACHABLE, exc.message
    else:
        health = Target.Health.WARNING if warnings else Target.Health.OK
        message = "\n".join(warnings)
    Target.objects.filter(pk=target.pk).update(health=health, health_message=message, checked_at=timezone.now())
    return health, message


def enforce_group_policy_all() -> list[tuple[str, str, int]]:
    """Check everyone with live grants or pending requests against their current groups.

    Return (username, "grant"|"request", id) for each grant revoked and each request cancelled.
    """
    holders = set(
        Grant.objects.filter(status__in=[Grant.Status.SCHEDULED, Grant.Status.ACTIVE]).values_list("user", flat=True)
    )
    holders |= set(
        AccessRequest.objects.filter(status=AccessRequest.Status.PENDING).values_list("requester", flat=True)
    )
    ended = []
    for user in get_user_model().objects.filter(pk__in=holders):
        revoked, cancelled = lifecycle.enforce_group_policy(user)
        ended += [(user.username, "grant", pk) for pk in revoked] + [(user.username, "request", pk) for pk in cancelled]
    return ended
