"""Identity is refreshed from the IdP without an interactive login: groups, manager, email and the account's state.

Against a real OpenID Connect provider (oidc_idp.py): the portal signs in
through allauth and keeps the refresh token; the tests then change the
account at the IdP, as an administrator there would, and nobody signs in.
"""

import datetime
import logging
import threading

import pytest
from allauth.socialaccount.models import SocialToken
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from accounts import identity, tasks
from accounts.models import User
from audit.models import AuditEvent


def groups_of(user):
    return sorted(user.groups.values_list("name", flat=True))


def age(*users, seconds=3600):
    """Let time pass since these identities were last read from the IdP."""
    then = timezone.now() - datetime.timedelta(seconds=seconds)
    User.objects.filter(pk__in=[u.pk for u in users]).update(identity_refreshed_at=then, identity_checked_at=then)


def test_signing_in_keeps_a_refresh_token_and_the_stable_keys_of_the_identity(client, idp):
    ana = idp.sign_in(client, "ana")
    assert (ana.email, ana.idp_subject, ana.first_name) == ("ana@example.com", "ana", "Ana")
    assert groups_of(ana) == ["engineers"]
    assert ana.identity_refreshed_at is not None
    assert SocialToken.objects.get(account__user=ana).token_secret, "offline_access gave a refresh token"


def test_the_sync_job_takes_away_a_group_removed_at_the_idp_without_a_login(client, idp):
    marc = idp.sign_in(client, "marc")
    idp.set("marc", groups=["engineers"])
    age(marc)
    assert tasks.sync_identities()[identity.REFRESHED] == 1
    assert groups_of(marc) == ["engineers"]
    event = AuditEvent.objects.filter(action="user.groups_synced").latest("id")
    assert event.details["removed"] == ["db-approvers"]


def test_the_sync_job_links_the_manager_named_later_at_the_idp(client, idp):
    ana, otto = idp.sign_in(client, "ana"), idp.sign_in(client, "otto")
    assert ana.manager is None, "marc has not signed in"
    idp.set("ana", manager="otto")
    age(ana)
    tasks.sync_identities()
    ana.refresh_from_db()
    assert ana.manager == otto


def test_a_recent_identity_is_left_alone_until_the_interval_has_passed(client, idp, settings):
    settings.JIT_IDENTITY_SYNC_INTERVAL = 600
    marc = idp.sign_in(client, "marc")
    idp.set("marc", groups=["engineers"])
    age(marc, seconds=300)
    assert tasks.sync_identities()[identity.REFRESHED] == 0
    assert groups_of(marc) == ["db-approvers", "engineers"]
    age(marc, seconds=700)
    assert tasks.sync_identities()[identity.REFRESHED] == 1
    assert groups_of(marc) == ["engineers"]


def test_a_user_disabled_at_the_idp_is_deactivated_by_the_sync_job_and_signed_out(client, idp):
    marc, ana = idp.sign_in(client, "marc"), idp.sign_in(client, "ana")
    assert client.get("/access/").status_code == 200
    idp.set("ana", disabled=True)
    age(ana, marc)
    call_command("sync_identities")
    ana.refresh_from_db()
    marc.refresh_from_db()
    assert not ana.is_active and ana.deactivated_by_idp_at is not None
    assert marc.is_active
    event = AuditEvent.objects.get(action="user.deactivated")
    assert event.details["user"] == "ana"
    assert event.details["reason"].startswith("the identity provider refused to refresh it (invalid_grant")
    assert client.get("/access/").status_code == 302, "her session ends too"


def test_signing_in_again_reactivates_an_account_the_idp_had_refused(client, idp):
    ana = idp.sign_in(client, "ana")
    idp.set("ana", disabled=True)
    age(ana)
    tasks.sync_identities()
    idp.set("ana", disabled=False)
    client.logout()
    ana = idp.sign_in(client, "ana")
    assert ana.is_active and ana.deactivated_by_idp_at is None
    assert AuditEvent.objects.get(action="user.reactivated").details["user"] == "ana"
    assert client.get("/access/").status_code == 200


def test_an_account_an_admin_deactivated_stays_deactivated_when_signing_in(client, idp):
    ana = idp.sign_in(client, "ana")
    User.objects.filter(pk=ana.pk).update(is_active=False)
    client.logout()
    ana = idp.sign_in(client, "ana")
    assert not ana.is_active
    assert client.get("/access/").status_code == 302


def test_an_unreachable_idp_deactivates_nobody_and_is_tried_again_an_interval_later(client, idp, settings, caplog):
    ana = idp.sign_in(client, "ana")
    idp.set("ana", groups=[])
    age(ana)
    settings.OIDC_ISSUER = "http://127.0.0.1:9"  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="accounts.identity"):
        assert tasks.sync_identities()[identity.FAILED] == 1
    ana.refresh_from_db()
    assert ana.is_active and groups_of(ana) == ["engineers"]
    assert "Could not refresh the identity of ana" in caplog.text
    assert tasks.sync_identities()[identity.FAILED] == 0, "not again at the next run"
    assert not AuditEvent.objects.filter(action="user.deactivated").exists()


def test_a_client_the_idp_does_not_accept_deactivates_nobody(client, idp, settings):
    ana = idp.sign_in(client, "ana")
    age(ana)
    settings.OIDC_CLIENT_SECRET = "not-the-client-secret"  # e.g. rotated at the IdP, not yet here
    result = identity.refresh_identity(ana)
    assert result.outcome == identity.FAILED and "invalid_client" in result.message
    ana.refresh_from_db()
    assert ana.is_active


def test_an_email_claim_with_a_line_break_is_refused_at_sync(client, idp, caplog):
    ana = idp.sign_in(client, "ana")
    idp.set("ana", email="ana@example.com\nBcc: everyone@example.com")
    age(ana)
    with caplog.at_level(logging.WARNING, logger="accounts.adapter"):
        tasks.sync_identities()
    ana.refresh_from_db()
    assert ana.email == ""
    assert "Not keeping the email claim 'ana@example.com\\nBcc: everyone@example.com' of ana" in caplog.text


def test_an_email_the_idp_stops_calling_verified_is_dropped_at_sync(client, idp):
    ana = idp.sign_in(client, "ana")
    idp.set("ana", email="ana@new.example", email_verified=False)
    age(ana)
    tasks.sync_identities()
    ana.refresh_from_db()
    assert ana.email == ""
    assert AuditEvent.objects.filter(action="user.profile_synced", details__email=["ana@example.com", ""]).exists()


def test_a_rotated_refresh_token_is_kept_for_the_next_refresh(client, idp):
    ana = idp.sign_in(client, "ana")
    seen = {SocialToken.objects.get(account__user=ana).token_secret}
    for _ in range(3):
        age(ana)
        assert identity.refresh_identity(ana).outcome == identity.REFRESHED
        seen.add(SocialToken.objects.get(account__user=ana).token_secret)
    assert len(seen) == 4, "the test IdP rotates refresh tokens at every use"
    ana.refresh_from_db()
    assert ana.is_active


@pytest.mark.django_db(transaction=True)
def test_two_refreshes_at_once_do_not_use_one_rotating_refresh_token_twice(client, idp):
    # Had both sent the same refresh token, the IdP would have ended the whole
    # grant (reuse detection) and the next refresh would have deactivated ana.
    ana = idp.sign_in(client, "ana")
    age(ana)
    start, outcomes = threading.Barrier(2), []

    def refresh():
        try:
            start.wait()
            outcomes.append(identity.refresh_identity(User.objects.get(pk=ana.pk)).outcome)
        finally:
            connection.close()

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert outcomes == [identity.REFRESHED, identity.REFRESHED]
    age(ana)
    assert identity.refresh_identity(ana).outcome == identity.REFRESHED
    ana.refresh_from_db()
    assert ana.is_active


def test_in_demo_mode_there_is_nothing_to_refresh(django_user_model, settings):
    settings.OIDC_ISSUER = ""
    demo = django_user_model.objects.create_user("demo-ana")
    assert identity.refresh_identity(demo).outcome == identity.NOT_APPLICABLE
    assert identity.ensure_recent_identity(demo) == demo
    assert tasks.sync_identities() == {
        identity.REFRESHED: 0,
        identity.GONE: 0,
        identity.FAILED: 0,
        identity.NOT_APPLICABLE: 0,
    }


def test_a_newcomer_with_a_malformed_email_claim_signs_in_without_an_address(client, idp):
    idp.set("nia", email="nia@example.com\r\nBcc: everyone@example.com", groups=["engineers"])
    nia = idp.sign_in(client, "nia")
    assert nia.email == "" and groups_of(nia) == ["engineers"]
