"""Workers and timers fail: killed (-9) mid-provisioning and
mid-revocation, a task delivered twice, two of each, all down."""

import time

import pytest
from django.utils import timezone

from grants import lifecycle
from grants.models import Grant

from .conftest import all_in, final_checks, freeze, make_grants, resume, wait_for

pytestmark = pytest.mark.postgres_only(
    "the fault suite is the production set-up: portal processes sharing a PostgreSQL database over TCP, its "
    "connections killed and refused"
)


def active(ids):
    return all_in(ids, [Grant.Status.ACTIVE])


@pytest.mark.django_db(transaction=True)
def test_workers_killed_while_revoking_a_burst_are_replaced_and_the_timer_finishes_the_burst(
    fleet, profile, otto, pg_cluster
):
    fleet.start("qcluster")
    fleet.start("timer")
    ids = make_grants(12, profile, seconds=5, approver=otto, prefix="burst")
    wait_for(lambda: active(ids), seconds=60, what="provisioning")
    wait_for(
        lambda: Grant.objects.filter(pk__in=ids, status__in=["revoking", "revoked"]).exists(),
        seconds=30,
        what="the burst",
    )
    fleet.kill9("qcluster")
    fleet.start("qcluster")
    final_checks(ids, [pg_cluster], since=time.monotonic(), what="workers killed during a revocation burst")


@pytest.mark.django_db(transaction=True)
def test_a_revocation_whose_worker_died_on_a_hung_target_is_finished_by_the_timer(
    fleet, second_profile, otto, second_cluster
):
    """Also a task delivered twice: the second finds the grant locked by the first, which then dies."""
    fleet.start("qcluster")
    fleet.start("timer")
    ids = make_grants(3, second_profile, seconds=60, approver=otto, prefix="hung")
    wait_for(lambda: active(ids), seconds=60, what="provisioning")
    freeze(second_cluster)
    for pk in ids:
        lifecycle.revoke_grant(pk, actor=Grant.objects.get(pk=pk).user, reason="released")
    time.sleep(2)  # the workers hold the grants and wait on the frozen target
    for pk in ids:  # delivered again while the first task runs: the grant is locked, nothing to do yet
        lifecycle._enqueue("grants.tasks.complete_revocation", pk)
    time.sleep(1)
    fleet.kill9("qcluster")
    resume(second_cluster)
    fleet.start("qcluster")
    final_checks(ids, [second_cluster], since=time.monotonic(), what="revocation on a hung target, its worker killed")


@pytest.mark.django_db(transaction=True)
def test_workers_killed_while_provisioning_on_a_hung_target_provision_once_when_it_answers(
    fleet, second_profile, otto, second_cluster
):
    fleet.start("qcluster")
    fleet.start("timer")
    freeze(second_cluster)
    ids = make_grants(3, second_profile, seconds=6, approver=otto, prefix="prov")
    time.sleep(2)  # the workers hold the grants (provisioning runs under the row lock) and wait on the target
    fleet.kill9("qcluster")
    resume(second_cluster)
    fleet.start("qcluster")
    started = time.monotonic()
    wait_for(lambda: active(ids), seconds=30, what="provisioning after the kill")
    print(
        f"\n[fault] workers killed mid-provisioning: 3 grants active {time.monotonic() - started:.1f} s after "
        "the fault ended"
    )
    last = max(Grant.objects.filter(pk__in=ids).values_list("expires_at", flat=True))
    time.sleep(max(0.0, (last - timezone.now()).total_seconds()))
    final_checks(ids, [second_cluster], since=time.monotonic(), what="the same grants at their expiry")


@pytest.mark.django_db(transaction=True)
def test_two_clusters_and_two_timers_one_cluster_killed_mid_burst(fleet, profile, otto, pg_cluster):
    for name in ("qcluster1", "qcluster2", "timer1", "timer2"):
        fleet.start(name)
    ids = make_grants(16, profile, seconds=5, approver=otto, prefix="two")
    wait_for(lambda: active(ids), seconds=60, what="provisioning")
    wait_for(
        lambda: Grant.objects.filter(pk__in=ids, status__in=["revoking", "revoked"]).exists(),
        seconds=30,
        what="the burst",
    )
    fleet.kill9("qcluster1")
    final_checks(ids, [pg_cluster], since=time.monotonic(), what="two clusters and two timers, one cluster killed")


@pytest.mark.django_db(transaction=True)
def test_everything_down_at_expiry_catches_up_when_it_comes_back(fleet, second_profile, otto, second_cluster):
    fleet.start("qcluster")
    fleet.start("timer")
    ids = make_grants(6, second_profile, seconds=4, approver=otto, prefix="down")
    wait_for(lambda: active(ids), seconds=60, what="provisioning")
    fleet.kill9("qcluster")
    fleet.kill9("timer")
    second_cluster.stop()
    time.sleep(6)  # every grant expires with nothing running
    second_cluster.start()
    fleet.start("qcluster")
    fleet.start("timer")
    final_checks(ids, [second_cluster], since=time.monotonic(), what="everything down at expiry")
