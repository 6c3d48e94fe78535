"""Reminders and escalation: a step undecided for `remind_after` is reminded, past `escalate_after` it escalates.

The django-q2 schedule calls `grants.tasks.remind_and_escalate`; here the
test calls it at chosen moments (the clock is moved, nothing waits).
"""

import datetime

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone
from django_q.models import Schedule

from audit.models import AuditEvent
from grants import catalog, lifecycle, tasks
from grants.models import AccessProfile, OnCallSchedule, Policy, StepAssignee, Target

from .support import submit
from .test_oncall import at

START = at("2026-03-23T10:00")  # otto's shift in `primary`; marc's begins the next day at 09:00


@pytest.fixture
def world(db, groups, otto, marc, eve):
    """One step on call for `primary` (otto, then marc), reminded after 10 min, escalated after 30 min to sre (eve)."""
    OnCallSchedule.objects.create(
        name="primary",
        tz="Europe/Berlin",
        members=["otto", "marc"],
        shift_length=datetime.timedelta(days=1),
        starts_on=datetime.date(2026, 3, 23),
    )
    OnCallSchedule.objects.create(
        name="secondary", tz="Europe/Berlin", members=["marc"], starts_on=datetime.date(2026, 3, 23)
    )
    eve.groups.add(Group.objects.create(name="sre"))
    target = Target.objects.create(
        name="appdb",
        kind="postgres",
        config={"host": "127.0.0.1", "port": 5432, "dbname": "appdb"},
        secret_env="JIT_TEST_PG_DSN",
    )
    pol = Policy.objects.create(
        name="on-call",
        request_timeout=datetime.timedelta(hours=1),
        steps=[
            {
                "schedule": "primary",
                "count": 1,
                "remind_after": 600,
                "escalate_after": 1800,
                "fallback": {"group": "sre"},
            }
        ],
    )
    profile = AccessProfile.objects.create(
        name="appdb-ro",
        title="appdb read-only",
        target=target,
        policy=pol,
        scope={"roles": ["app_readonly"]},
        max_duration=datetime.timedelta(hours=4),
    )
    profile.requestable_by.add(groups["engineers"])
    return profile


@pytest.fixture
def clock(monkeypatch):
    class Clock:
        def set(self, when):
            monkeypatch.setattr(timezone, "now", lambda: when)

    c = Clock()
    c.set(START)
    return c


@pytest.fixture
def sync(monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr("django_q.conf.Conf.SYNC", True)

    def run(func, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return func(*args, **kwargs)

    return run


def mails_to(outbox, user):
    return [m for m in outbox if user.email in m.to]


def test_the_schedule_runs_every_minute(db):
    schedule = Schedule.objects.get(name="jitportal: remind and escalate approvals")
    assert (schedule.func, schedule.schedule_type, schedule.minutes) == ("grants.tasks.remind_and_escalate", "I", 1)


def test_an_undecided_step_is_reminded_then_escalates_to_its_fallback_and_still_lapses_at_the_timeout(
    world, ana, otto, eve, clock, sync, mailoutbox
):
    req = sync(submit, ana, world)
    assert [m.subject for m in mails_to(mailoutbox, otto)] == ["[jitportal] Approve? ana: appdb read-only for 30 min"]
    clock.set(START + datetime.timedelta(minutes=9))
    assert sync(tasks.remind_and_escalate) == ([], [])

    clock.set(START + datetime.timedelta(minutes=11))
    assert sync(tasks.remind_and_escalate) == ([req.pk], [])
    assert sync(tasks.remind_and_escalate) == ([], [])  # once per step
    reminder = mails_to(mailoutbox, otto)[-1]
    assert (
        reminder.subject.startswith("[jitportal] Reminder: Approve?")
        and "Nobody has decided this for 11 min" in reminder.body
    )
    assert not mails_to(mailoutbox, eve)
    with pytest.raises(lifecycle.NotAllowedError, match="not an approver"):
        lifecycle.approve_request(req.pk, actor=eve)

    clock.set(START + datetime.timedelta(minutes=31))
    assert sync(tasks.remind_and_escalate) == ([], [req.pk])
    event = AuditEvent.objects.get(action="request.escalated", object_id=str(req.pk))
    assert event.details["fallback"] == "a member of sre" and event.details["after"] == "31 min"
    assert event.details["asked"][0]["on_call"] == "otto"  # the schedule asked again: still otto's shift
    told = mails_to(mailoutbox, eve)
    assert (
        len(told) == 1
        and "it escalated to a member of sre" in told[0].body
        and told[0].subject.startswith("[jitportal] Escalated:")
    )
    assert mails_to(mailoutbox, otto)[-1].subject.startswith("[jitportal] Escalated:")
    assert AuditEvent.objects.filter(action="request.reminded", object_id=str(req.pk)).count() == 1

    # created_at comes from the model's default (the real clock, which the test does not move).
    lifecycle.lapse_stale_requests(req.created_at + datetime.timedelta(minutes=61))
    req.refresh_from_db()
    assert req.status == "lapsed"


def test_escalation_asks_the_step_schedule_again_and_a_fallback_schedule(world, ana, otto, marc, clock, sync, client):
    world.policy.steps = [{"schedule": "primary", "escalate_after": 3600, "fallback": {"schedule": "secondary"}}]
    world.policy.request_timeout = datetime.timedelta(days=1)
    world.policy.save()
    clock.set(at("2026-03-24T08:30"))  # otto's shift, half an hour before marc's
    req = sync(submit, ana, world)
    clock.set(at("2026-03-24T09:31"))
    sync(tasks.remind_and_escalate)
    asked = [(a.user.username, a.fallback, a.schedule) for a in StepAssignee.objects.filter(request=req)]
    assert asked == [("otto", False, "primary"), ("marc", False, "primary"), ("marc", True, "secondary")]
    client.force_login(marc)
    page = client.get(f"/access/requests/{req.pk}/").content.decode()
    assert "on call for secondary in the rotation" in page and "Approve" in page
    lifecycle.approve_request(req.pk, actor=marc)
    req.refresh_from_db()
    assert req.status == "approved"


def test_the_next_step_opens_with_fresh_timers(world, ana, otto, eve, clock, sync, groups):
    world.policy.steps = [
        {"schedule": "primary", "remind_after": 600, "escalate_after": 1200, "fallback": {"group": "sre"}},
        {"group": "db-approvers", "remind_after": 600},
    ]
    world.policy.request_timeout = datetime.timedelta(days=1)
    world.policy.save()
    req = sync(submit, ana, world)
    clock.set(START + datetime.timedelta(minutes=25))
    assert sync(tasks.remind_and_escalate) == ([], [req.pk])
    lifecycle.approve_request(req.pk, actor=eve)  # the fallback decides step 1
    req.refresh_from_db()
    assert req.step == 1 and req.escalated_at is None and req.reminded_at is None
    clock.set(START + datetime.timedelta(minutes=34))
    assert sync(tasks.remind_and_escalate) == ([], [])
    clock.set(START + datetime.timedelta(minutes=36))
    assert sync(tasks.remind_and_escalate) == ([req.pk], [])
    with pytest.raises(lifecycle.NotAllowedError):
        lifecycle.approve_request(req.pk, actor=eve)  # sre was step 1's fallback, not step 2's


@pytest.mark.parametrize(
    "step, message",
    [
        ("{schedule: p, escalate_after: 1h}", "steps[1].escalate_after: name the fallback"),
        ("{schedule: p, fallback: {group: sre}}", "steps[1].fallback: say when to escalate"),
        (
            "{schedule: p, escalate_after: 1h, fallback: {schedule: nosuch}}",
            "steps[1].fallback.schedule: no schedule 'nosuch'",
        ),
        ("{schedule: p, escalate_after: 1h, fallback: {team: x}}", "steps[1].fallback.team: unknown field"),
        (
            "{schedule: p, remind_after: 2h, escalate_after: 1h, fallback: {group: sre}}",
            "steps[1].remind_after: must be shorter",
        ),
        ("{schedule: p, remind_after: soon}", "steps[1].remind_after: write a positive duration"),
    ],
)
def test_a_bad_escalation_is_an_error_naming_the_field(tmp_path, db, step, message):
    path = tmp_path / "catalog.yaml"
    path.write_text(
        f"schedules:\n  p:\n    rotation: {{members: [otto], start: 2026-03-23}}\npolicies:\n  pol:\n    "
        f"steps:\n      - {step}\n"
    )
    with pytest.raises(catalog.CatalogError) as caught:
        catalog.load(path)
    assert any(message in e for e in caught.value.errors), caught.value.errors
