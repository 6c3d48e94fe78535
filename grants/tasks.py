"""Background work: thin functions that take ids and call the lifecycle.

Every task is idempotent and safe to run in several workers at once: the
lifecycle claims rows with `select_for_update(skip_locked=True)` and a task
that finds nothing to do returns quietly.
"""

import datetime
import logging
import math

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from . import lifecycle
from .connectors import ConnectorError, get_connector
from .models import Grant, Target

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


def expire_due():
    """Revoke every active grant past its expiry, in batches, reusing one connection per target."""
    done = 0
    connectors = {}
    try:
        while True:
            ids = lifecycle.begin_due_expiries(limit=settings.JIT_EXPIRY_BATCH)
            if not ids:
                break
            try:
                lifecycle.complete_revocations(ids, connectors=connectors)
            except Exception:
                # The batch stays `revoking`; the sweeper retries each grant on its own.
                log.exception("Revoking grants %s failed", ids)
            done += len(ids)
    finally:
        for connector in connectors.values():
            connector.close()
    return done


def enqueue_expiries(due_count: int):
    """Enqueue enough `expire_due` tasks that the workers share a burst of expiries."""
    from django_q.tasks import async_task

    workers = settings.Q_CLUSTER.get("workers", 1)
    for _ in range(max(1, min(workers, math.ceil(due_count / settings.JIT_EXPIRY_BATCH)))):
        async_task("grants.tasks.expire_due", group="expire_due")


def sweep():
    """Make what should be true now true: expire, retry revocations and provisioning, lapse requests, remind holders."""
    now = timezone.now()
    expire_due()
    remind_expiring(now)
    connectors = {}
    try:
        for grant_id in Grant.objects.filter(status=Grant.Status.REVOKING, next_attempt_at__lte=now).values_list("pk", flat=True):
            try:
                lifecycle.complete_revocation(grant_id, connectors=connectors)
            except Exception:
                log.exception("Retrying revocation of grant %s failed", grant_id)
    finally:
        for connector in connectors.values():
            connector.close()
    stuck = Grant.objects.filter(status=Grant.Status.SCHEDULED).filter(Q(not_before__isnull=True) | Q(not_before__lte=now)).filter(
        Q(next_attempt_at__lte=now) | Q(next_attempt_at__isnull=True, created_at__lte=now - timezone.timedelta(seconds=30))
    )
    for grant_id in stuck.values_list("pk", flat=True):
        try:
            lifecycle.provision_grant(grant_id)
        except Exception:
            log.exception("Provisioning grant %s failed", grant_id)
    lifecycle.lapse_stale_requests(now)


def remind_and_escalate():
    """Remind and escalate undecided approval steps (a django-q2 schedule, every minute)."""
    return lifecycle.remind_and_escalate()


def remind_expiring(now=None) -> list[int]:
    """Enqueue a reminder for each active grant that ends within ten minutes and was not reminded of this expiry.

    The claim is a compare-and-set on `reminded_at`, so two sweepers send
    one reminder; a grant extended after its reminder is reminded again
    before its new expiry.
    """
    from django_q.tasks import async_task

    now = now or timezone.now()
    not_reminded = Q(reminded_at__isnull=True) | Q(reminded_at__lt=F("expires_at") - REMIND_BEFORE)
    due = Grant.objects.filter(not_reminded, status=Grant.Status.ACTIVE, expires_at__gt=now, expires_at__lte=now + REMIND_BEFORE)
    claimed = []
    for grant_id in due.values_list("pk", flat=True):
        if Grant.objects.filter(not_reminded, pk=grant_id).update(reminded_at=now) == 1:
            claimed.append(grant_id)
            async_task("grants.notify.expiry_soon", grant_id, group="expiry_soon")
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
    from django.contrib.auth import get_user_model

    from .models import AccessRequest

    holders = set(Grant.objects.filter(status__in=[Grant.Status.SCHEDULED, Grant.Status.ACTIVE]).values_list("user", flat=True))
    holders |= set(AccessRequest.objects.filter(status=AccessRequest.Status.PENDING).values_list("requester", flat=True))
    ended = []
    for user in get_user_model().objects.filter(pk__in=holders):
        revoked, cancelled = lifecycle.enforce_group_policy(user)
        ended += [(user.username, "grant", pk) for pk in revoked] + [(user.username, "request", pk) for pk in cancelled]
    return ended
