"""Background tasks: target health, and the sweep's retries."""

import datetime

from django.utils import timezone

from grants import lifecycle, tasks
from grants.models import Grant, Target


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
