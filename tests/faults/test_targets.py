"""Targets fail: stopped across several retries, or frozen (SIGSTOP) while another target stays healthy."""

import datetime
import time

import psycopg
import pytest
from django_q.models import Failure

from audit.models import AuditEvent
from grants import lifecycle
from grants.models import Grant

from .conftest import all_in, final_checks, freeze, make_grants, resume, wait_for

pytestmark = pytest.mark.postgres_only(
    "the fault suite is the production set-up: portal processes sharing a PostgreSQL database over TCP, its "
    "connections killed and refused"
)


@pytest.mark.django_db(transaction=True)
def test_a_target_stopped_across_several_retries_is_caught_up_within_seconds_of_its_start(
    fleet, second_profile, otto, second_cluster
):
    fleet.start("qcluster")
    fleet.start("timer")
    ids = make_grants(4, second_profile, seconds=3, approver=otto, prefix="stop")
    wait_for(lambda: all_in(ids, ["active"]), seconds=60, what="provisioning")
    second_cluster.stop()
    wait_for(
        lambda: AuditEvent.objects.filter(action="grant.revoke_failed", details__attempt=3).count() >= 4,
        seconds=60,
        what="three failed attempts of each grant",
    )
    second_cluster.start()
    assert second_cluster.port == second_profile.target.config["port"]  # the grants' target, back where it was
    final_checks(ids, [second_cluster], since=time.monotonic(), what="target stopped across retries, then started")


@pytest.mark.django_db(transaction=True)
def test_a_frozen_target_does_not_delay_a_healthy_one(fleet, profile, second_profile, otto, pg_cluster, second_cluster):
    fleet.start("qcluster")
    fleet.start("timer")
    # The frozen target's grants first: a pass meets them first.
    frozen = make_grants(6, second_profile, seconds=6, approver=otto, prefix="frozen")
    healthy = make_grants(6, profile, seconds=6, approver=otto, prefix="healthy")
    wait_for(lambda: all_in(frozen + healthy, ["active"]), seconds=60, what="provisioning")
    freeze(second_cluster)
    try:
        wait_for(lambda: all_in(healthy, ["revoked"]), seconds=30, what="the healthy target's grants")
        first_failure = wait_for(
            lambda: (
                AuditEvent.objects.filter(action="grant.revoke_failed", object_id__in=[str(pk) for pk in frozen])
                .order_by("pk")
                .first()
            ),
            seconds=30,
            what="the frozen target's first failure",
        )
        # The healthy target's revocations were done and committed before the frozen target's connection gave up.
        last_healthy = (
            AuditEvent.objects.filter(action="grant.revoked", object_id__in=[str(pk) for pk in healthy])
            .order_by("-pk")
            .first()
        )
        assert last_healthy.pk < first_failure.pk
        assert (
            max(Grant.objects.filter(pk__in=healthy).values_list("verified_at", flat=True)) < first_failure.created_at
        )
        # Nothing on the frozen target was marked revoked while it could not answer.
        assert not Grant.objects.filter(pk__in=frozen, status=Grant.Status.REVOKED).exists()
    finally:
        resume(second_cluster)
    ended = time.monotonic()
    final_checks(frozen, [second_cluster], since=ended, what="frozen target, after SIGCONT")
    final_checks(healthy, [pg_cluster], since=ended, what="healthy target beside a frozen one")


@pytest.mark.django_db(transaction=True)
def test_an_extension_approved_while_a_worker_holds_the_grant_reaches_the_target(
    fleet, second_profile, ana_on_second, otto, second_cluster
):
    fleet.start("qcluster")
    fleet.start("timer")
    grant = ana_on_second
    wait_for(lambda: Grant.objects.filter(pk=grant.pk, status="active").exists(), seconds=60, what="provisioning")
    first = lifecycle.request_extension(
        grant.pk, actor=grant.user, duration=datetime.timedelta(minutes=5), justification="INC-4711 needs longer"
    )
    freeze(second_cluster)
    try:
        lifecycle.approve_request(first.pk, actor=otto)
        time.sleep(1.5)  # the worker holds the grant's row and waits on the frozen target
        second = lifecycle.request_extension(
            grant.pk,
            actor=grant.user,
            duration=datetime.timedelta(minutes=5),
            justification="INC-4711 needs longer still",
        )
        lifecycle.approve_request(second.pk, actor=otto)  # waits for the worker's row lock, never deadlocks
    finally:
        resume(second_cluster)
    ended = time.monotonic()
    grant.refresh_from_db()

    def target_follows():
        with psycopg.connect(second_cluster.admin_dsn, autocommit=True) as conn:
            (until,) = conn.execute(
                "SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s", [f"jit_g{grant.pk}"]
            ).fetchone()
        recorded = Grant.objects.filter(pk=grant.pk, next_attempt_at__isnull=True, last_error="").exists()
        return until == grant.expires_at and recorded

    wait_for(target_follows, seconds=30, what="the target's VALID UNTIL to match the portal's expiry")
    print(
        "\n[fault] extension approved while a worker held the grant: target matched "
        f"{time.monotonic() - ended:.1f} s after"
    )
    assert AuditEvent.objects.filter(action="grant.extended", object_id=str(grant.pk)).count() == 2
    # The worker's attempt on the frozen target is in the trail (a deadlock rolled it back), and no task failed.
    assert AuditEvent.objects.filter(action="grant.extend_failed", object_id=str(grant.pk)).exists()
    assert not Failure.objects.exists(), list(Failure.objects.values_list("func", "result"))
    assert AuditEvent.objects.filter(action="grant.extended_on_target", object_id=str(grant.pk)).exists()
    lifecycle.revoke_grant(grant.pk, actor=grant.user, reason="released")
    final_checks([grant.pk], [second_cluster], since=time.monotonic(), what="extension while a worker held the grant")
