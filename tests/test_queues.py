"""The broker's two lanes: access work is handed to workers before notifications queued earlier."""

from django_q.brokers import get_broker
from django_q.signing import SignedPackage
from django_q.tasks import async_task


def _funcs(broker, n):
    out = []
    for _ in range(n):
        ((task_id, payload),) = broker.dequeue()
        out.append(SignedPackage.loads(payload)["func"])
        broker.acknowledge(task_id)
    return out


def test_provisioning_is_taken_before_the_notifications_queued_ahead_of_it(db):
    broker = get_broker()
    for pk in range(4):
        async_task("notifications.tasks.request_decided", pk)
    async_task("grants.notify.request_decided", 4)  # the old name (queued before an upgrade): later lane too
    async_task("grants.tasks.provision", 1)
    async_task("grants.tasks.expire_due")
    assert broker.queue_size() == 7
    # Access work first, oldest first; then the notifications, oldest first.
    assert _funcs(broker, 7) == ["grants.tasks.provision", "grants.tasks.expire_due"] + [
        "notifications.tasks.request_decided"
    ] * 4 + ["grants.notify.request_decided"]
    assert broker.queue_size() == 0
    assert broker.dequeue() is None


def test_a_notification_is_taken_once_nothing_else_waits(db):
    broker = get_broker()
    async_task("notifications.tasks.grant_revoked", 3)
    assert broker.queue_size() == 1
    assert _funcs(broker, 1) == ["notifications.tasks.grant_revoked"]
