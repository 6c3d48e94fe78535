"""Wake at the next expiry (or window start) and enqueue the revocation (or provisioning) on time.

django-q2's scheduler looks at schedules only about every 30 seconds; this
process sleeps until the next `expires_at` instead, so revocation starts
within a fraction of a second. It only enqueues: running several copies is
safe, because the workers claim each grant once.
"""

import signal
import time

from django.core.management.base import BaseCommand
from django.db import close_old_connections
from django.db.models import Count, Max, Min
from django.utils import timezone

from django_q.tasks import async_task

from grants.models import Grant
from grants.tasks import enqueue_expiries


# A burst of expiries a few milliseconds apart is handled in a few wake-ups, not one per grant.
MIN_WAKE = 0.05
# While a burst goes on, the running `expire_due` tasks loop until nothing is due:
# one more round of tasks per second is enough to keep every worker busy.
ROUND_EVERY = 0.25


class Command(BaseCommand):
    help = "Enqueue revocations at the moment grants expire (run beside qcluster)."

    def add_arguments(self, parser):
        parser.add_argument("--max-sleep", type=float, default=2.0, help="Look for new grants at least this often (seconds).")

    def handle(self, *args, max_sleep, **options):
        self.running = True
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.stdout.write("expiry timer running")
        enqueued_up_to, enqueued_at = None, 0.0
        opened = set()  # windows enqueued by this process; the sweeper retries any that fail
        while self.running:
            close_old_connections()
            now = timezone.now()
            active = Grant.objects.filter(status=Grant.Status.ACTIVE)
            due = active.filter(expires_at__lte=now).aggregate(n=Count("pk"), newest=Max("expires_at"))
            # Enqueue once per newly due grant; if workers are slow to take
            # them, enqueue again only after a pause, not on every wake-up.
            since = time.monotonic() - enqueued_at
            fresh = bool(due["n"]) and (enqueued_up_to is None or due["newest"] > enqueued_up_to)
            if due["n"] and ((fresh and since > ROUND_EVERY) or since > 5):
                enqueue_expiries(due["n"])
                enqueued_up_to, enqueued_at = due["newest"], time.monotonic()
            # Scheduled windows open at their start, on time as well.
            windows = Grant.objects.filter(status=Grant.Status.SCHEDULED, not_before__isnull=False)
            for grant_id in windows.filter(not_before__lte=now).exclude(pk__in=opened).values_list("pk", flat=True):
                async_task("grants.tasks.provision", grant_id, group="provision")
                opened.add(grant_id)
            upcoming = min(
                filter(None, [
                    active.filter(expires_at__gt=now).aggregate(next=Min("expires_at"))["next"],
                    windows.filter(not_before__gt=now).aggregate(next=Min("not_before"))["next"],
                ]),
                default=None,
            )
            wait = max_sleep if upcoming is None else min(max_sleep, (upcoming - now).total_seconds())
            self._sleep(max(wait, MIN_WAKE))

    def _sleep(self, seconds):
        end = time.monotonic() + seconds
        while self.running and time.monotonic() < end:
            time.sleep(max(0.0, min(0.1, end - time.monotonic())))

    def _stop(self, *args):
        self.running = False
