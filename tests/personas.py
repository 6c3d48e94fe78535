"""The test personas, one definition for every test package (grants/tests and audit/tests import them).

ana is an engineer on call whose manager is marc; otto owns the database
(approves, manages nobody); bob is another engineer; audra audits; eve is
signed in and in no group; root is a superuser.
"""

import pytest
from django.contrib.auth.models import Group, Permission


@pytest.fixture
def groups(db):
    names = ("engineers", "db-approvers", "auditors", "oncall")
    found = {name: Group.objects.get_or_create(name=name)[0] for name in names}
    # The auditors group gets this from a post_migrate hook; say it here so the tests do not depend on it.
    found["auditors"].permissions.add(
        Permission.objects.get(content_type__app_label="audit", codename="view_auditevent")
    )
    return found


def _user(django_user_model, username, *groups_, **extra):
    user = django_user_model.objects.create_user(
        username, f"{username}@example.com", f"{username}-password-123", **extra
    )
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


def _superuser(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "root-password-123")


@pytest.fixture
def root(django_user_model):
    """A superuser (audit/tests' name)."""
    return _superuser(django_user_model)


@pytest.fixture
def admin_user(django_user_model):
    """The same superuser (grants/tests' name; grants/tests/connectors/test_mysql.py has a `root` of its own)."""
    return _superuser(django_user_model)
