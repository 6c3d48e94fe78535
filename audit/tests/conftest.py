"""Personas and a catalog for the report tests, on the real target cluster, built through the lifecycle."""

import contextlib
import datetime

import pytest
from django.contrib.auth.models import Group, Permission

from grants import lifecycle
from grants.models import AccessProfile, Policy, Target

JUSTIFICATION = "Investigate INC-4711: slow order queries on appdb"
MINUTES = datetime.timedelta(minutes=1)


@contextlib.contextmanager
def past_the_trail_triggers(cursor):
    """Let `cursor`'s statements past the trail's append-only triggers, as a superuser can (replica mode skips them).

    SQLite has no such triggers (they are PostgreSQL's, audit migrations 0002 and 0004): nothing to get past.
    """
    postgres = cursor.db.vendor == "postgresql"
    if postgres:
        cursor.execute("SET LOCAL session_replication_role = replica")
    yield
    if postgres:
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")


@pytest.fixture
def groups(db):
    names = ("engineers", "db-approvers", "auditors", "oncall")
    found = {name: Group.objects.get_or_create(name=name)[0] for name in names}
    # The auditors group gets this from a post_migrate hook; say it here so the tests do not depend on it.
    found["auditors"].permissions.add(Permission.objects.get(content_type__app_label="audit", codename="view_auditevent"))
    return found


def _user(django_user_model, username, *groups_, **extra):
    user = django_user_model.objects.create_user(username, f"{username}@example.com", f"{username}-password-123", **extra)
    user.groups.add(*groups_)
    return user


@pytest.fixture
def marc(django_user_model, groups):
    """Manager of ana; in db-approvers."""
    return _user(django_user_model, "marc", groups["engineers"], groups["db-approvers"], first_name="Marc")


@pytest.fixture
def ana(django_user_model, groups, marc):
    """Requester (engineer, on call) whose manager is marc."""
    return _user(django_user_model, "ana", groups["engineers"], groups["oncall"], first_name="Ana", manager=marc)


@pytest.fixture
def bob(django_user_model, groups):
    """Another requester."""
    return _user(django_user_model, "bob", groups["engineers"], first_name="Bob")


@pytest.fixture
def otto(django_user_model, groups):
    """Resource owner: a db approver who is nobody's manager."""
    return _user(django_user_model, "otto", groups["db-approvers"], first_name="Otto")


@pytest.fixture
def audra(django_user_model, groups):
    """Auditor: in the auditors group, decides nothing."""
    return _user(django_user_model, "audra", groups["auditors"], first_name="Audra")


@pytest.fixture
def eve(django_user_model, groups):
    """An outsider: signed in, in no group."""
    return _user(django_user_model, "eve", first_name="Eve")


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "root-password-123")


@pytest.fixture
def target(db, pg_target_env):
    return Target.objects.create(
        name="appdb-cluster",
        kind="postgres",
        config={"host": pg_target_env.host, "port": pg_target_env.port, "dbname": "appdb"},
        secret_env="JIT_TEST_PG_DSN",
    )


@pytest.fixture
def profile(target, groups):
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
def quick_profile(target, groups):
    """Read-write on appdb; its policy approves up to 30 minutes by itself, and on-call engineers may break glass."""
    policy = Policy.objects.create(
        name="quick", auto_approve=[{"name": "short-fix", "max_duration": 1800}], break_glass_groups=["oncall"],
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
        requester=user, profile=profile, duration=minutes * MINUTES, justification=justification, ticket=ticket, **kwargs
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
