"""django-q2's ORM broker with two lanes: access work first, notifications after.

Approvals, expiries and sweeps enqueue provisioning and revocation; the same
events enqueue notifications, which wait on a mail server or Slack. In one
first-in-first-out queue a provisioning task waits behind every message
queued before it, so that under a burst the credentials are late by the
mail backlog (README "Benchmarks", approval to usable credentials). Here a
task whose function starts with one of `settings.JIT_QUEUE_LATER` goes to a
second lane (key `<cluster>:later`) that workers take from only when the
first is empty; each lane is taken oldest first. Same table, same workers,
same acknowledgement: nothing else changes, and a notification is never
lost, only taken after the access work that is waiting.

Here too is what the probes (jitportal/ops.py) and the metrics read about
the background work: this process's broker, and when a worker last finished
the minute sweep.
"""

from time import sleep

from django.conf import settings
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import Task
from django_q.signing import BadSignature, SignedPackage

LATER = ":later"
# The minute sweep ("jitportal: sweep") proves that the scheduler and at least one worker are alive.
SWEEP_FUNC = "grants.tasks.sweep"


class TwoLaneORM(ORM):
    def _keys(self):
        return [self.list_key, self.list_key + LATER]

    def enqueue(self, task):
        key = self.list_key or Conf.CLUSTER_NAME
        try:
            func = SignedPackage.loads(task).get("func")
        except (BadSignature, AttributeError):
            func = None
        if isinstance(func, str) and func.startswith(tuple(settings.JIT_QUEUE_LATER)):
            key += LATER
        return self.get_connection().create(key=key, payload=task, lock=timezone.now()).pk

    def dequeue(self):
        queue = self.get_connection()
        for key in self._keys():
            claimed = []
            for task in queue.filter(key=key, lock__lt=timezone.now()).order_by("id")[: Conf.BULK]:
                # Another cluster may have been faster: only what this update locks is ours.
                if queue.filter(id=task.id, lock=task.lock).update(lock=self.timeout(task)):
                    claimed.append((task.pk, task.payload))
            if claimed:
                return claimed
        sleep(Conf.POLL)  # both lanes empty, as the parent does
        return None

    def queue_size(self) -> int:
        return self.get_connection().filter(key__in=self._keys(), lock__lte=timezone.now()).count()

    def lock_size(self) -> int:
        return self.get_connection().filter(key__in=self._keys(), lock__gt=timezone.now()).count()

    def purge_queue(self):
        return self.get_connection().filter(key__in=self._keys()).delete()


_broker = None


def broker():
    """Return this process's broker (the configured one), made on first use."""
    global _broker
    if _broker is None:
        _broker = get_broker()
    return _broker


def last_sweep():
    """Return when a worker last finished the minute sweep, or None."""
    return Task.objects.filter(func=SWEEP_FUNC).order_by("-stopped").values_list("stopped", flat=True).first()
