"""Personas and a catalog on the real target cluster, built through the lifecycle."""

import datetime

import pytest
from django.contrib.auth.models import Group

from grants import lifecycle
from grants.models import AccessProfile, Target


@pytest.fixture
def groups(db):
    return {name: Group.objects.get_or_create(name=name)[0] for name in ("engineers", "db-approvers", "auditors")}


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
    """Requester (engineer) whose manager is marc."""
    return _user(django_user_model, "ana", groups["engineers"], first_name="Ana", manager=marc)


@pytest.fixture
def otto(django_user_model, groups):
    """Resource owner: a db approver who is nobody's manager."""
    return _user(django_user_model, "otto", groups["db-approvers"], first_name="Otto")


@pytest.fixture
def eve(django_user_model, groups):
    """An outsider: signed in, in no group."""
    return _user(django_user_model, "eve", first_name="Eve")


@pytest.fixture
def admin_user(django_user_model):
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
        default_duration=datetime.timedelta(hours=1),
        max_duration=datetime.timedelta(hours=4),
        approver_group=groups["db-approvers"],
    )
    p.requestable_by.add(groups["engineers"])
    return p


@pytest.fixture
def rw_profile(target, groups):
    """Read-write on appdb; ana's manager may approve too."""
    p = AccessProfile.objects.create(
        name="appdb-readwrite",
        title="appdb read-write",
        target=target,
        scope={"roles": ["app_readwrite"], "owner_role": "app_owner"},
        max_duration=datetime.timedelta(hours=2),
        manager_approves=True,
    )
    p.requestable_by.add(groups["engineers"])
    return p


JUSTIFICATION = "Investigate INC-4711: slow order queries on appdb"


@pytest.fixture
def pending_request(ana, profile):
    return lifecycle.submit_request(
        requester=ana, profile=profile, duration=datetime.timedelta(minutes=30), justification=JUSTIFICATION, ticket="INC-4711"
    )


@pytest.fixture
def approved_request(pending_request, otto):
    return lifecycle.approve_request(pending_request.pk, actor=otto, comment="ok")


@pytest.fixture
def active_grant(approved_request):
    return lifecycle.provision_grant(approved_request.grant.pk)
