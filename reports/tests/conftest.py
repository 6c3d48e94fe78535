"""A catalog for the report tests, on the real target cluster,
built through the lifecycle; personas: tests/personas.py."""

import datetime

import pytest
from django.utils import timezone

from grants import lifecycle
from grants.models import AccessProfile, Policy
from grants.tests.conftest import target  # noqa: F401 (fixture: the request journey's target cluster)
from tests.personas import ana, audra, bob, eve, groups, marc, otto, root  # noqa: F401 (fixtures)

JUSTIFICATION = "Investigate INC-4711: slow order queries on appdb"
EMERGENCY = "Production is down: the orders table is locked"
MINUTES = datetime.timedelta(minutes=1)


@pytest.fixture
def profile(target, groups):  # noqa: F811 (pytest: the parameter is the imported fixture)
    """Read-only on appdb, requestable by engineers, approved by db-approvers."""
    p = AccessProfile.objects.create(
        name="appdb-readonly",
        title="appdb read-only",
        target=target,
        scope={"roles": ["app_readonly"]},
        max_duration=datetime.timedelta(hours=4),
        approver_group=groups["db-approvers"],
    )
    p.requestable_by.add(groups["engineers"])
    return p


@pytest.fixture
def quick_profile(target, groups):  # noqa: F811 (pytest: the parameter is the imported fixture)
    """Read-write on appdb; its policy approves up to 30 minutes by itself, and on-call engineers may break glass."""
    policy = Policy.objects.create(
        name="quick",
        auto_approve=[{"name": "short-fix", "max_duration": 1800}],
        break_glass_groups=["oncall"],
        steps=[{"group": "db-approvers"}],
    )
    p = AccessProfile.objects.create(
        name="appdb-readwrite",
        title="appdb read-write",
        target=target,
        scope={"roles": ["app_readwrite"], "owner_role": "app_owner"},
        max_duration=datetime.timedelta(hours=2),
        policy=policy,
    )
    p.requestable_by.add(groups["engineers"])
    return p


def ask(user, profile, *, minutes=45, justification=JUSTIFICATION, ticket="INC-4711", **kwargs):
    return lifecycle.submit_request(
        requester=user,
        profile=profile,
        duration=minutes * MINUTES,
        justification=justification,
        ticket=ticket,
        **kwargs,
    )


def approved(user, profile, approver, **kwargs):
    """Ask and have `approver` approve: return the scheduled grant."""
    req = ask(user, profile, **kwargs)
    lifecycle.approve_request(req.pk, actor=approver, comment="ok")
    req.refresh_from_db()
    return req.grant


def held(user, profile, approver, **kwargs):
    """Ask, approve and provision on the real target: return the active grant."""
    return lifecycle.provision_grant(approved(user, profile, approver, **kwargs).pk)


def released(grant):
    """The holder releases it and the target is cleaned and read again: return the revoked grant."""
    lifecycle.revoke_grant(grant.pk, actor=grant.user, reason="released")
    return lifecycle.complete_revocation(grant.pk)


@pytest.fixture
def history(ana, bob, otto, marc, profile, quick_profile):  # noqa: F811 (pytest: the parameters are the imported fixtures)
    """A little of everything: held and released, held now, auto-approved, denied, break-glass, lapsed, cancelled."""
    done = released(held(ana, profile, otto))  # approved by otto, provisioned, released, confirmed gone
    live = held(bob, profile, marc)  # approved by marc, active now
    auto = ask(ana, quick_profile, minutes=20)  # the policy's rule approves it
    auto.refresh_from_db()
    lifecycle.revoke_grant(auto.grant.pk, actor=ana, reason="released")  # released before it was provisioned
    denied = ask(bob, quick_profile, minutes=90, justification="Need to rewrite the orders table by hand")
    lifecycle.deny_request(denied.pk, actor=otto, comment="Use the migration pipeline")
    emergency = ask(ana, quick_profile, minutes=60, justification=EMERGENCY, break_glass=True)
    lapsed = ask(ana, profile, minutes=30)
    lifecycle.lapse_stale_requests(now=timezone.now() + datetime.timedelta(days=2))
    cancelled = ask(ana, profile, minutes=30)
    lifecycle.cancel_request(cancelled.pk, actor=ana)
    for obj in (live, emergency, lapsed, cancelled, denied):
        obj.refresh_from_db()
    return {
        "done": done,
        "live": live,
        "auto": auto,
        "denied": denied,
        "emergency": emergency,
        "lapsed": lapsed,
        "cancelled": cancelled,
    }
