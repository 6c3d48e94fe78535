"""A catalog on the real target cluster, built through the lifecycle; the personas come from tests/personas.py.

Tests here may use the edges' test helpers (tests are not held to the apps' import rules, tests/test_architecture.py):
the feature files (test_break_glass.py, test_extensions.py, ...) hold their API and notification sections too.
"""

import datetime

import pytest
from django.contrib.auth.models import Permission

from api.tests.support import api, fresh_rate_limits  # noqa: F401 (fixtures: the feature files' API sections)
from grants import lifecycle
from grants.models import AccessProfile, Target
from notifications.tests.support import portal, run, smtp  # noqa: F401 (fixtures: the feature files' notification sections)
from tests.personas import admin_user, ana, audra, bob, eve, groups, marc, otto  # noqa: F401 (fixtures)


@pytest.fixture
def target(db, pg_target_env):
    return Target.objects.create(
        name="appdb-cluster",
        kind="postgres",
        config={"host": pg_target_env.host, "port": pg_target_env.port, "dbname": "appdb"},
        secret_env="JIT_TEST_PG_DSN",
    )


@pytest.fixture
def profile(target, groups):  # noqa: F811 (pytest: the parameter is the imported fixture)
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
def rw_profile(target, groups):  # noqa: F811 (pytest: the parameter is the imported fixture)
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
def pending_request(ana, profile):  # noqa: F811 (pytest: the parameter is the imported fixture)
    return lifecycle.submit_request(
        requester=ana,
        profile=profile,
        duration=datetime.timedelta(minutes=30),
        justification=JUSTIFICATION,
        ticket="INC-4711",
    )


@pytest.fixture
def approved_request(pending_request, otto):  # noqa: F811 (pytest: the parameter is the imported fixture)
    return lifecycle.approve_request(pending_request.pk, actor=otto, comment="ok")


@pytest.fixture
def active_grant(approved_request):
    return lifecycle.provision_grant(approved_request.grant.pk)


@pytest.fixture
def auditor(audra):  # noqa: F811 (pytest: the parameter is the imported fixture)
    """audra, with the permission to open access reviews the post_migrate hook gives auditors (said, not relied on)."""
    audra.user_permissions.add(Permission.objects.get(codename="open_accessreview"))
    return type(audra).objects.get(pk=audra.pk)
