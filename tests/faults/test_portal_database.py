"""The portal's database fails: its connections killed again and again, then new connections refused for seconds."""

import time

import pytest
from django_q.models import OrmQ

from grants.models import Grant

from .conftest import final_checks, make_grants, wait_for

pytestmark = pytest.mark.postgres_only(
    "the fault suite is the production set-up: portal processes sharing a PostgreSQL database over TCP, its "
    "connections killed and refused"
)


@pytest.mark.django_db(transaction=True)
def test_the_timer_rides_out_killed_connections_and_refused_ones_and_revokes_on_time_after(
    fleet, portal_db, profile, otto, pg_cluster
):
    fleet.start("qcluster")
    timer = fleet.start("timer")
    wait_for(lambda: "expiry timer running" in fleet.log("timer"), seconds=30, what="the timer to start")
    before = make_grants(3, profile, seconds=4, approver=otto, prefix="before")
    wait_for(
        lambda: Grant.objects.filter(pk__in=before, status=Grant.Status.ACTIVE).count() == 3,
        seconds=30,
        what="provisioning",
    )

    # 40 kills in 4 s, then 5 s during which no new connection is accepted.
    for _ in range(40):
        portal_db.kill_connections()
        time.sleep(0.1)
    portal_db.refuse_connections(True)
    portal_db.kill_connections()
    time.sleep(5)
    portal_db.refuse_connections(False)
    ended = time.monotonic()

    assert timer.poll() is None, f"the timer exited with status {timer.returncode}:\n{fleet.log('timer')[-2000:]}"
    final_checks(before, [pg_cluster], since=ended, what="grants that expired during the database outage")

    # One line when the outage began, one when the timer's next try (at most 2 s of backoff later) got through.
    # Every outage the timer saw is followed by its "answers again" line; the last one may still be a backoff away.
    def every_outage_answered():
        log = fleet.log("timer")
        return log.count("the portal database failed") == log.count("answers again") >= 1

    wait_for(every_outage_answered, seconds=10, what="the timer to say the database answers after each outage it saw")

    # Revocation is on time again, not at the next sweep: a grant expiring now is revoked by the timer's task.
    after = make_grants(1, profile, seconds=3, approver=otto, prefix="after")
    wait_for(
        lambda: Grant.objects.filter(pk__in=after, status=Grant.Status.ACTIVE).exists(), seconds=30, what="provisioning"
    )
    final_checks(after, [pg_cluster], since=time.monotonic(), what="a grant expiring after the outage")


@pytest.mark.django_db(transaction=True)
def test_with_the_workers_down_the_timer_does_not_pile_up_tasks(fleet, profile, otto):
    fleet.start("qcluster")
    ids = make_grants(1, profile, seconds=2, approver=otto, prefix="idle")
    wait_for(
        lambda: Grant.objects.filter(pk__in=ids, status=Grant.Status.ACTIVE).exists(), seconds=30, what="provisioning"
    )
    fleet.kill9("qcluster")
    OrmQ.objects.all().delete()
    fleet.start("timer")
    wait_for(lambda: OrmQ.objects.exists(), seconds=30, what="the timer to enqueue the expiry")
    time.sleep(12)  # old timers enqueued another task every 5 s while nobody took them
    assert OrmQ.objects.count() == 1
