"""Groups, manager, email and staff follow the IdP's claims at every login and every refresh."""

import logging

import pytest
from django.contrib.auth.models import Group

from accounts.adapter import sync_user_from_claims
from audit.models import AuditEvent


def names(user):
    return sorted(user.groups.values_list("name", flat=True))


@pytest.fixture
def kim(django_user_model, db):
    return django_user_model.objects.create_user("kim", "kim@example.com")


def person(django_user_model, username, **claims):
    """A user signed in with these claims (subject = username unless given)."""
    user = django_user_model.objects.create_user(username)
    sync_user_from_claims(user, {"sub": username, **claims})
    user.refresh_from_db()
    return user


def test_groups_from_the_claim_are_added_and_created(kim):
    sync_user_from_claims(kim, {"groups": ["engineers", "oncall"], "email": "kim@example.com", "email_verified": True})
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


def test_auditors_group_makes_staff_and_losing_it_takes_staff_away(kim):
    sync_user_from_claims(kim, {"groups": ["auditors"]})
    kim.refresh_from_db()
    assert kim.is_staff
    assert kim.has_perm("audit.view_auditevent")
    sync_user_from_claims(kim, {"groups": []})
    kim.refresh_from_db()
    assert not kim.is_staff


# Manager ------------------------------------------------------------------------------


def test_manager_is_linked_by_the_idp_subject_and_unlinked_when_the_claim_goes(kim, django_user_model):
    boss = person(django_user_model, "boss", sub="00u-boss-7f3a")
    sync_user_from_claims(kim, {"sub": "00u-kim", "manager": "00u-boss-7f3a"})
    kim.refresh_from_db()
    assert kim.manager == boss
    sync_user_from_claims(kim, {})
    kim.refresh_from_db()
    assert kim.manager is None


def test_manager_who_signs_in_later_is_linked_then(kim, django_user_model):
    sync_user_from_claims(kim, {"sub": "00u-kim", "manager": "00u-late"})
    kim.refresh_from_db()
    assert kim.manager is None
    late = person(django_user_model, "late", sub="00u-late")
    kim.refresh_from_db()
    assert kim.manager == late
    assert AuditEvent.objects.get(action="user.reports_linked").details == {"user": "late", "reports": ["kim"]}


def test_a_username_in_the_manager_claim_links_nobody(kim, django_user_model):
    # A username is neither stable nor unique across an IdP's history: no fallback to it.
    person(django_user_model, "boss", sub="00u-boss")
    sync_user_from_claims(kim, {"sub": "00u-kim", "manager": "boss"})
    kim.refresh_from_db()
    assert kim.manager is None


def test_manager_is_linked_by_employee_id_when_configured(kim, django_user_model, settings):
    settings.OIDC_MANAGER_MATCH, settings.OIDC_EMPLOYEE_ID_CLAIM = "employee_id", "employeeNumber"
    boss = person(django_user_model, "boss", employeeNumber="E-1001")
    sync_user_from_claims(kim, {"sub": "00u-kim", "employeeNumber": "E-2002", "manager": "E-1001"})
    kim.refresh_from_db()
    assert (kim.manager, kim.employee_id) == (boss, "E-2002")


def test_manager_is_linked_by_a_verified_email_when_configured(kim, django_user_model, settings):
    settings.OIDC_MANAGER_MATCH = "email"
    boss = person(django_user_model, "boss", email="Boss@Example.com", email_verified=True)
    sync_user_from_claims(kim, {"sub": "00u-kim", "manager": "boss@example.com"})
    kim.refresh_from_db()
    assert kim.manager == boss


@pytest.mark.parametrize("match", ["sub", "email"])
def test_an_unverified_email_claim_does_not_make_anyone_their_manager(kim, django_user_model, settings, match):
    settings.OIDC_MANAGER_MATCH = match
    # kim's real manager has not signed in yet.
    sync_user_from_claims(kim, {"sub": "00u-kim", "manager": "boss@example.com"})
    newcomer = person(django_user_model, "newcomer", email="BOSS@example.com", email_verified=False)
    kim.refresh_from_db()
    assert kim.manager is None
    assert newcomer.email == ""
    sync_user_from_claims(kim, {"sub": "00u-kim", "manager": "boss@example.com"})
    kim.refresh_from_db()
    assert kim.manager is None


def test_two_users_matching_the_manager_claim_link_nobody_and_it_is_audited(kim, django_user_model, settings, caplog):
    settings.OIDC_MANAGER_MATCH = "email"
    person(django_user_model, "boss", email="boss@example.com", email_verified=True)
    person(django_user_model, "boss-old", email="BOSS@example.com", email_verified=True)
    with caplog.at_level(logging.WARNING, logger="accounts.adapter"):
        sync_user_from_claims(kim, {"sub": "00u-kim", "manager": "boss@example.com"})
    kim.refresh_from_db()
    assert kim.manager is None
    assert "matches 2 users (boss, boss-old): no manager linked" in caplog.text
    event = AuditEvent.objects.get(action="user.manager_ambiguous")
    assert event.details["matches"] == ["boss", "boss-old"] and event.details["user"] == "kim"
    sync_user_from_claims(kim, {"sub": "00u-kim", "manager": "boss@example.com"})
    assert AuditEvent.objects.filter(action="user.manager_ambiguous").count() == 1, "not again at every refresh"


def test_a_second_holder_of_the_managers_key_unlinks_the_reports(kim, django_user_model, settings):
    settings.OIDC_MANAGER_MATCH, settings.OIDC_EMPLOYEE_ID_CLAIM = "employee_id", "employeeNumber"
    person(django_user_model, "boss", employeeNumber="E-1001")
    sync_user_from_claims(kim, {"sub": "00u-kim", "manager": "E-1001"})
    kim.refresh_from_db()
    assert kim.manager is not None
    person(django_user_model, "contractor", employeeNumber="E-1001")
    kim.refresh_from_db()
    assert kim.manager is None
    assert AuditEvent.objects.get(action="user.manager_ambiguous").details["matches"] == ["boss", "contractor"]


def test_nobody_is_their_own_manager(kim):
    sync_user_from_claims(kim, {"sub": "00u-kim", "manager": "00u-kim"})
    kim.refresh_from_db()
    assert kim.manager is None


# Email --------------------------------------------------------------------------------


def test_a_verified_email_is_kept_and_a_change_is_audited(kim):
    sync_user_from_claims(kim, {"email": "kim.new@example.com", "email_verified": True})
    kim.refresh_from_db()
    assert kim.email == "kim.new@example.com"
    assert AuditEvent.objects.get(action="user.profile_synced").details["email"] == [
        "kim@example.com",
        "kim.new@example.com",
    ]


@pytest.mark.parametrize("verified", [False, "false", None])
def test_an_email_the_idp_does_not_call_verified_is_not_kept(kim, verified, caplog):
    claims = {"email": "kim@elsewhere.example", **({} if verified is None else {"email_verified": verified})}
    with caplog.at_level(logging.WARNING, logger="accounts.adapter"):
        sync_user_from_claims(kim, claims)
    kim.refresh_from_db()
    assert kim.email == ""
    assert "Not keeping the email claim 'kim@elsewhere.example' of kim" in caplog.text


def test_without_requiring_verification_a_missing_flag_is_trusted_but_false_is_not(kim, settings):
    settings.OIDC_REQUIRE_VERIFIED_EMAIL = False  # for IdPs that never send email_verified
    sync_user_from_claims(kim, {"email": "kim@entra.example"})
    kim.refresh_from_db()
    assert kim.email == "kim@entra.example"
    sync_user_from_claims(kim, {"email": "kim@entra.example", "email_verified": False})
    kim.refresh_from_db()
    assert kim.email == ""


@pytest.mark.parametrize(
    "claim",
    ["kim@example.com\nBcc: everyone@example.com", "kim@example.com\r", "not an address", "kim@" + "x" * 250 + ".com"],
)
def test_an_email_claim_that_is_not_one_address_is_refused(kim, claim, caplog):
    with caplog.at_level(logging.WARNING, logger="accounts.adapter"):
        sync_user_from_claims(kim, {"email": claim, "email_verified": True})
    kim.refresh_from_db()
    assert kim.email == ""
    assert "Not keeping the email claim" in caplog.text


def test_names_with_line_breaks_are_kept_on_one_line(kim):
    sync_user_from_claims(kim, {"given_name": "Kim\r\nSubject: hi", "family_name": " Lee\n"})
    kim.refresh_from_db()
    assert (kim.first_name, kim.last_name) == ("Kim Subject: hi", "Lee")
