"""Groups, manager and staff follow the IdP's claims at every login."""

import pytest
from django.contrib.auth.models import Group

from accounts.adapter import sync_user_from_claims
from audit.models import AuditEvent


def names(user):
    return sorted(user.groups.values_list("name", flat=True))


@pytest.fixture
def kim(django_user_model, db):
    return django_user_model.objects.create_user("kim", "kim@example.com")


def test_groups_from_the_claim_are_added_and_created(kim):
    sync_user_from_claims(kim, {"groups": ["engineers", "oncall"], "email": "kim@example.com"})
    assert names(kim) == ["engineers", "oncall"]
    assert Group.objects.filter(name="oncall").exists()
    event = AuditEvent.objects.get(action="user.groups_synced")
    assert event.details["added"] == ["engineers", "oncall"]


def test_groups_missing_from_the_claim_are_removed(kim):
    sync_user_from_claims(kim, {"groups": ["engineers", "oncall"]})
    sync_user_from_claims(kim, {"groups": ["engineers"]})
    assert names(kim) == ["engineers"]
    assert AuditEvent.objects.filter(action="user.groups_synced").order_by("id").last().details["removed"] == ["oncall"]


def test_only_managed_groups_are_touched(kim, settings):
    settings.OIDC_MANAGED_GROUPS = ["engineers", "db-approvers"]
    kim.groups.add(Group.objects.create(name="local-only"))
    sync_user_from_claims(kim, {"groups": ["engineers", "marketing"]})
    assert names(kim) == ["engineers", "local-only"]
    sync_user_from_claims(kim, {"groups": []})
    assert names(kim) == ["local-only"]


def test_a_single_string_claim_counts_as_one_group(kim):
    sync_user_from_claims(kim, {"groups": "engineers"})
    assert names(kim) == ["engineers"]


def test_manager_comes_from_the_manager_claim_by_email(kim, django_user_model):
    boss = django_user_model.objects.create_user("boss", "Boss@Example.com")
    sync_user_from_claims(kim, {"manager": "boss@example.com"})
    kim.refresh_from_db()
    assert kim.manager == boss
    sync_user_from_claims(kim, {})
    kim.refresh_from_db()
    assert kim.manager is None


def test_manager_who_signs_in_later_is_linked_then(kim, django_user_model):
    sync_user_from_claims(kim, {"manager": "late@example.com"})
    kim.refresh_from_db()
    assert kim.manager is None
    late = django_user_model.objects.create_user("late")
    sync_user_from_claims(late, {"email": "late@example.com"})
    kim.refresh_from_db()
    assert kim.manager == late


def test_auditors_group_makes_staff_and_losing_it_takes_staff_away(kim):
    sync_user_from_claims(kim, {"groups": ["auditors"]})
    kim.refresh_from_db()
    assert kim.is_staff
    assert kim.has_perm("audit.view_auditevent")
    sync_user_from_claims(kim, {"groups": []})
    kim.refresh_from_db()
    assert not kim.is_staff
