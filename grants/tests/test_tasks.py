"""Background tasks: target health, and the sweep's retries."""

import datetime

from django.utils import timezone

from grants import lifecycle, tasks
from grants.management.commands import expiry_timer
from grants.models import Grant, Target

from .conftest import JUSTIFICATION


def test_reachable_target_is_marked_ok(target):
    health, _ = tasks.check_target(target)
    target.refresh_from_db()
    assert health == target.health == Target.Health.OK
    assert target.checked_at is not None


def test_target_without_its_admin_secret_shows_unreachable_with_the_reason(target, monkeypatch):
    monkeypatch.delenv("JIT_TEST_PG_DSN")
    tasks.check_targets()
    target.refresh_from_db()
    assert target.health == Target.Health.UNREACHABLE
    assert "JIT_TEST_PG_DSN" in target.health_message and "not set" in target.health_message


def test_grants_on_an_unconfigured_target_fail_with_that_message(approved_request, monkeypatch):
    monkeypatch.delenv("JIT_TEST_PG_DSN")
    grant = lifecycle.provision_grant(approved_request.grant.pk)
    assert grant.status == Grant.Status.FAILED
    assert "JIT_TEST_PG_DSN" in grant.last_error


def test_sweep_provisions_a_grant_whose_task_was_lost(approved_request):
    # As if the worker died before running the provisioning task.
    Grant.objects.filter(pk=approved_request.grant.pk).update(created_at=timezone.now() - datetime.timedelta(minutes=2))
    tasks.sweep()
    assert Grant.objects.get(pk=approved_request.grant.pk).status == Grant.Status.ACTIVE


def test_revocation_retries_go_to_the_longest_waiting_grants_first(ana, otto, profile, monkeypatch, django_user_model):
    ids = []
    for n in range(3):
        user = django_user_model.objects.create_user(f"wait{n}")
        user.groups.add(*ana.groups.all())
        req = lifecycle.submit_request(
            requester=user,
            profile=profile,
            duration=datetime.timedelta(minutes=5),
            justification="Investigate INC-4711: slow order queries on appdb",
        )
        lifecycle.approve_request(req.pk, actor=otto)
        grant = lifecycle.provision_grant(req.grant.pk)
        lifecycle.revoke_grant(grant.pk, actor=user, reason="released")
        ids.append(grant.pk)
    now = timezone.now()
    for age, pk in zip((10, 300, 60), ids):  # the second has waited longest, the first the least
        Grant.objects.filter(pk=pk).update(next_attempt_at=now - datetime.timedelta(seconds=age))
    monkeypatch.setenv("JIT_TEST_PG_DSN", "postgresql://jitadmin:x@127.0.0.1:1/postgres")  # the target is down
    tried = []
    for _ in range(3):
        lifecycle.retry_revocations(target_id=profile.target_id, limit=1, connectors={})
        tried += [pk for pk in ids if pk not in tried and Grant.objects.get(pk=pk).attempts == 1]
    assert tried == [ids[1], ids[2], ids[0]]


def test_a_pass_takes_no_new_work_once_its_time_budget_is_spent(active_grant, monkeypatch, settings):
    # Half of django-q's task timeout: the batch under way may take the other half.
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 120}
    assert tasks.pass_budget() == 60
    Grant.objects.filter(pk=active_grant.pk).update(expires_at=timezone.now() - datetime.timedelta(seconds=1))
    monkeypatch.setattr(tasks, "pass_budget", lambda: 0)
    assert tasks.expire_due() == 0
    assert Grant.objects.get(pk=active_grant.pk).status == Grant.Status.ACTIVE  # left for the next pass


def test_the_timer_enqueues_a_round_for_newly_due_work_once_and_again_when_more_falls_due(
    ana, otto, profile, monkeypatch, django_user_model, settings
):
    settings.JIT_EXPIRY_BATCH = 2
    grants = []
    for n in range(12):
        user = django_user_model.objects.create_user(f"due{n}")
        user.groups.add(*ana.groups.all())
        req = lifecycle.submit_request(
            requester=user, profile=profile, duration=datetime.timedelta(minutes=5), justification=JUSTIFICATION
        )
        grants.append(lifecycle.approve_request(req.pk, actor=otto).grant)
    # Active, as provisioning leaves them (the target is not what this test is about), ten of them expired.
    Grant.objects.filter(pk__in=[g.pk for g in grants]).update(
        status=Grant.Status.ACTIVE, expires_at=timezone.now() + datetime.timedelta(minutes=5), next_attempt_at=None
    )
    Grant.objects.filter(pk__in=[g.pk for g in grants[:10]]).update(
        expires_at=timezone.now() - datetime.timedelta(seconds=5)
    )
    enqueued = []
    monkeypatch.setattr(expiry_timer, "enqueue_expiries", enqueued.append)
    monkeypatch.setattr(expiry_timer, "ROUND_EVERY", 0.0)
    monkeypatch.setattr(expiry_timer, "REPEAT_EVERY", 3600.0)
    timer = expiry_timer.Command()
    timer.broker, timer.workers, timer.max_sleep = expiry_timer.get_broker(), 3, 2.0
    timer.enqueued_up_to, timer.enqueued_at, timer.opened = None, 0.0, set()

    timer._wake()
    # Ten due; the count stops at what one round of three workers takes (3 x 2): their tasks loop until none is due.
    assert enqueued == [6]

    timer._wake()
    assert enqueued == [6]  # nothing newly due: no second round for the same burst

    Grant.objects.filter(pk=grants[10].pk).update(expires_at=timezone.now())
    timer._wake()
    assert enqueued == [6, 6]  # one more expired after the round was enqueued
