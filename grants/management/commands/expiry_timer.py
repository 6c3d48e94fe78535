"""Wake at the next expiry (or window start, or retry) and enqueue the revocation (or provisioning) on time.

django-q2's scheduler looks at schedules only about every 30 seconds; this
process sleeps until the next `expires_at` instead, so revocation starts
within a fraction of a second. It only enqueues: running several copies is
safe, because the workers claim each grant once.

It rides out the portal database's outages by itself: a database error
logs one line, the loop waits with a growing pause (up to
`MAX_BACKOFF`) and tries again, and one more line says when the database
answered again.
"""

import logging
import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import Error as DatabaseError
from django.db import close_old_connections, connections
from django.db.models import Min, Q
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.tasks import async_task

from grants.lifecycle import RETRY_GRACE
from grants.models import Grant
from grants.tasks import due_work, enqueue_expiries

log = logging.getLogger("grants.expiry_timer")

# A burst of expiries a few milliseconds apart is handled in a few wake-ups, not one per grant.
MIN_WAKE = 0.05
# While a burst goes on, the running `expire_due` tasks loop until nothing is due:
# one more round of tasks per second is enough to keep every worker busy.
ROUND_EVERY = 0.25
# Work still due this long after it was enqueued is enqueued again (its task
# may have died with a worker), but only if no task is waiting in the queue:
# with the workers down, more tasks would only wait too.
REPEAT_EVERY = 4.0
RETRIED = [Grant.Status.SCHEDULED, Grant.Status.ACTIVE, Grant.Status.REVOKING]


def due_after(moment) -> Q:
    """The grants that became due after `moment` (see `due_work`): a retry, an expiry, a window or a lost task.

    Each branch is answered from one of the partial indexes (migration
    0013), so asking costs the same with 10 or 10,000 grants due at once.
    """
    return (
        Q(next_attempt_at__gt=moment)
        | Q(next_attempt_at__isnull=True, status=Grant.Status.ACTIVE, expires_at__gt=moment)
        # A window, or a task that provisions at approval, is due RETRY_GRACE after it was to start.
        | Q(next_attempt_at__isnull=True, status=Grant.Status.SCHEDULED)
        & (Q(not_before__gt=moment - RETRY_GRACE) | Q(not_before__isnull=True, created_at__gt=moment - RETRY_GRACE))
    )


# Pauses between tries while the database is unreachable.
MIN_BACKOFF, MAX_BACKOFF = 0.2, 2.0


class Command(BaseCommand):
    help = "Enqueue revocations at the moment grants expire (run beside qcluster)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--max-sleep", type=float, default=2.0, help="Look for new grants at least this often (seconds)."
        )

    def handle(self, *args, max_sleep, **options):
        self.running = True
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.stdout.write("expiry timer running")
        self.stdout.flush()
        self.max_sleep = max_sleep
        self.broker = get_broker()
        self.workers = settings.Q_CLUSTER.get("workers", 1)
        self.enqueued_up_to, self.enqueued_at = None, 0.0
        self.opened = set()  # windows enqueued by this process; the sweeper retries any that fail
        down_since, backoff = None, MIN_BACKOFF
        while self.running:
            try:
                close_old_connections()
                wait = self._wake()
            except DatabaseError as exc:
                # A killed connection, a refused one, a failover: drop the
                # connection and try again with a new one after a pause.
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning(
                        "Expiry timer: the portal database failed (%s); retrying until it answers",
                        " ".join(str(exc).split()),
                    )
                self._drop_connections()
                self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if down_since is not None:
                log.warning(
                    "Expiry timer: the portal database answers again after %.1f s", time.monotonic() - down_since
                )
                down_since, backoff = None, MIN_BACKOFF
            self._sleep(max(wait, MIN_WAKE))

    def _wake(self) -> float:
        """Enqueue what is due now; return how long to sleep."""
        now = timezone.now()
        # Expiries, and target work whose retry (or lost task) is due: revocations
        # left by a killed worker, provisioning, an extension the target has not followed.
        # How many are due matters only up to what the workers take in one round
        # (a task each): the count stops there, however large the burst.
        due = Grant.objects.filter(due_work(now)).order_by()
        count = due[: self.workers * settings.JIT_EXPIRY_BATCH].count()
        if count:
            # Enqueue once per newly due grant; if workers are slow to take
            # them, enqueue again only after a pause, not on every wake-up.
            since = time.monotonic() - self.enqueued_at
            fresh = self.enqueued_up_to is None or due.filter(due_after(self.enqueued_up_to)).exists()
            waiting = self.broker.queue_size()
            if (fresh and since > ROUND_EVERY and waiting < self.workers) or (since > REPEAT_EVERY and waiting == 0):
                enqueue_expiries(count)
                # Everything due now became due by now.
                self.enqueued_up_to, self.enqueued_at = now, time.monotonic()
        # Scheduled windows open at their start, on time as well.
        scheduled = Grant.objects.filter(status=Grant.Status.SCHEDULED)
        windows = scheduled.filter(not_before__isnull=False)
        for grant_id in windows.filter(not_before__lte=now).exclude(pk__in=self.opened).values_list("pk", flat=True):
            async_task("grants.tasks.provision", grant_id, group="provision")
            self.opened.add(grant_id)
        lost = now - RETRY_GRACE
        soon = scheduled.aggregate(
            window=Min("not_before", filter=Q(not_before__gt=now)),
            task=Min(
                "created_at", filter=Q(not_before__isnull=True, next_attempt_at__isnull=True, created_at__gt=lost)
            ),
        )
        upcoming = min(
            filter(
                None,
                [
                    Grant.objects.filter(status=Grant.Status.ACTIVE, expires_at__gt=now).aggregate(
                        next=Min("expires_at")
                    )["next"],
                    Grant.objects.filter(status__in=RETRIED, next_attempt_at__gt=now).aggregate(
                        next=Min("next_attempt_at")
                    )["next"],
                    soon["window"],
                    soon["task"] and soon["task"] + RETRY_GRACE,
                ],
            ),
            default=None,
        )
        return self.max_sleep if upcoming is None else min(self.max_sleep, (upcoming - now).total_seconds())

    def _drop_connections(self):
        for conn in connections.all(initialized_only=True):
            try:
                conn.close()
            except DatabaseError:
                pass  # already broken; Django forgets it either way

    def _sleep(self, seconds):
        end = time.monotonic() + seconds
        while self.running and time.monotonic() < end:
            time.sleep(max(0.0, min(0.1, end - time.monotonic())))

    def _stop(self, *args):
        self.running = False
