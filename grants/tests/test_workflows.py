"""Scheduled windows, extension, break-glass and bundles, through the lifecycle on the real target."""

import datetime
import threading
import time

import psycopg
import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.utils import timezone

from audit.models import AuditEvent
from grants import lifecycle, selectors
from grants.models import AccessProfile, AccessRequest, Grant, Policy

from .conftest import JUSTIFICATION

H = datetime.timedelta(hours=1)


def valid_until(pg_cluster, role):
    with psycopg.connect(pg_cluster.admin_dsn) as conn:
        return conn.execute("SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s", [role]).fetchone()[0]


# Scheduled window ------------------------------------------------------------


def test_a_window_is_approved_ahead_provisioned_at_its_start_and_ends_at_its_end(ana, otto, profile):
    start = timezone.now() + datetime.timedelta(days=2)
    req = lifecycle.submit_request(
        requester=ana, profile=profile, duration=2 * H, justification=JUSTIFICATION, starts_at=start
    )
    lifecycle.approve_request(req.pk, actor=otto)
    grant = Grant.objects.get(request=req)
    assert grant.not_before == start
    assert lifecycle.provision_grant(grant.pk) is None  # not yet
    assert Grant.objects.get(pk=grant.pk).status == "scheduled"
    # The window opens (its start moved to a moment ago, as if time passed).
    Grant.objects.filter(pk=grant.pk).update(not_before=timezone.now() - datetime.timedelta(minutes=10))
    grant = lifecycle.provision_grant(grant.pk)
    assert grant.status == "active"
    assert grant.expires_at == grant.not_before + 2 * H  # ends where the window ends, not 2 h from now


def test_a_window_that_ended_before_approval_fails_clearly(ana, otto, profile):
    req = lifecycle.submit_request(
        requester=ana, profile=profile, duration=H, justification=JUSTIFICATION, starts_at=timezone.now() + H
    )
    lifecycle.approve_request(req.pk, actor=otto)
    grant = Grant.objects.get(request=req)
    Grant.objects.filter(pk=grant.pk).update(not_before=timezone.now() - 2 * H)
    grant = lifecycle.provision_grant(grant.pk)
    assert grant.status == "failed"
    assert "window ended" in grant.last_error


def test_a_window_in_the_past_is_refused(ana, profile):
    with pytest.raises(lifecycle.InvalidRequestError) as exc:
        lifecycle.submit_request(
            requester=ana, profile=profile, duration=H, justification=JUSTIFICATION, starts_at=timezone.now() - H
        )
    assert "in the past" in exc.value.errors["starts_at"]


def test_a_pending_window_lapses_when_it_ends(ana, profile):
    req = lifecycle.submit_request(
        requester=ana, profile=profile, duration=H, justification=JUSTIFICATION, starts_at=timezone.now() + H
    )
    assert lifecycle.lapse_stale_requests(timezone.now() + 2 * H + datetime.timedelta(seconds=1)) == 1
    req.refresh_from_db()
    assert req.status == "lapsed"


# Extension ---------------------------------------------------------------------


@pytest.fixture
def self_service(profile):
    """Extensions within 4 h in all are approved by the policy."""
    profile.policy = Policy.objects.create(
        name="self-service",
        steps=[{"group": "db-approvers"}],
        auto_approve=[{"name": "within-4h", "max_duration": 4 * 3600}],
    )
    profile.save()
    return profile


def test_an_extension_moves_the_expiry_in_the_portal_and_on_the_target(active_grant, ana, self_service, pg_cluster):
    old = active_grant.expires_at
    # A policy attached after approval: the extension goes through it.
    req = lifecycle.request_extension(
        active_grant.pk, actor=ana, duration=H, justification="The migration needs another hour to finish"
    )
    req.refresh_from_db()
    assert req.status == "approved" and req.auto_rule == "within-4h"
    grant = Grant.objects.get(pk=active_grant.pk)
    assert grant.expires_at == old + H
    lifecycle.extend_on_target(grant.pk)
    assert valid_until(pg_cluster, grant.external_ref) == grant.expires_at
    trail = AuditEvent.objects.filter(object_type="grant", object_id=str(grant.pk)).order_by("id")
    assert list(trail.values_list("action", flat=True))[-2:] == ["grant.extended", "grant.extended_on_target"]


def test_an_extension_beyond_the_maximum_is_refused_with_what_is_left(active_grant, ana):
    with pytest.raises(lifecycle.InvalidRequestError) as exc:
        lifecycle.request_extension(active_grant.pk, actor=ana, duration=4 * H, justification=JUSTIFICATION)
    assert "you can add at most 3 h 30 min" in exc.value.errors["duration"]


def test_an_extension_needing_approval_waits_for_an_approver(active_grant, ana, otto):
    old = active_grant.expires_at
    req = lifecycle.request_extension(active_grant.pk, actor=ana, duration=H, justification=JUSTIFICATION)
    assert req.status == "pending"
    assert req in selectors.requests_awaiting(otto)
    lifecycle.approve_request(req.pk, actor=otto)
    assert Grant.objects.get(pk=active_grant.pk).expires_at == old + H
    assert Grant.objects.filter(user=ana).count() == 1  # no second grant


def test_only_the_holder_extends_and_only_active_access(active_grant, ana, otto):
    with pytest.raises(lifecycle.NotAllowedError):
        lifecycle.request_extension(active_grant.pk, actor=otto, duration=H, justification=JUSTIFICATION)
    lifecycle.revoke_grant(active_grant.pk, actor=ana, reason="released")
    with pytest.raises(lifecycle.TransitionError):
        lifecycle.request_extension(active_grant.pk, actor=ana, duration=H, justification=JUSTIFICATION)


# Break-glass -------------------------------------------------------------------


@pytest.fixture
def glass(profile, ana):
    profile.policy = Policy.objects.create(
        name="glass", steps=[{"group": "db-approvers"}], break_glass_groups=["sre-oncall"]
    )
    profile.save()
    ana.groups.add(Group.objects.create(name="sre-oncall"))
    return profile


def test_break_glass_grants_at_once_flags_it_and_opens_a_review(ana, otto, glass):
    req = lifecycle.submit_request(
        requester=ana,
        profile=glass,
        duration=H,
        justification="Production is down, orders table locked",
        break_glass=True,
    )
    req.refresh_from_db()
    assert req.status == "approved" and req.break_glass and req.auto_rule == "break-glass"
    grant = lifecycle.provision_grant(req.grant.pk)
    assert grant.status == "active"
    assert AuditEvent.objects.filter(action="request.break_glass", object_id=str(req.pk)).exists()
    assert [r.request for r in selectors.open_reviews(otto)] == [req]
    with pytest.raises(lifecycle.NotAllowedError):
        lifecycle.close_review(req.review.pk, actor=ana, comment="I reviewed myself, all good")
    with pytest.raises(lifecycle.InvalidRequestError):
        lifecycle.close_review(req.review.pk, actor=otto, comment="ok")
    lifecycle.close_review(req.review.pk, actor=otto, comment="Checked the session log: only the lock was killed.")
    assert selectors.open_reviews(otto) == []
    assert AuditEvent.objects.filter(action="review.closed", actor=otto).exists()


def test_break_glass_is_only_for_its_groups(marc, glass):
    with pytest.raises(lifecycle.NotAllowedError):
        lifecycle.submit_request(
            requester=marc, profile=glass, duration=H, justification=JUSTIFICATION, break_glass=True
        )
    assert not AccessRequest.objects.exists()
    assert AuditEvent.objects.filter(action="request.break_glass_refused", actor=marc).exists()


# Bundles -----------------------------------------------------------------------


@pytest.fixture
def three_dbs(profile, groups, target):
    more = []
    for n in (2, 3):
        p = AccessProfile.objects.create(
            name=f"appdb{n}-readonly",
            title=f"appdb{n} read-only",
            target=target,
            scope={"roles": ["app_readonly"]},
            max_duration=4 * H,
            approver_group=groups["db-approvers"],
        )
        p.requestable_by.add(groups["engineers"])
        more.append(p)
    return [profile, *more]


def test_a_bundle_is_decided_once_and_gives_one_grant_per_profile(ana, otto, three_dbs):
    reqs = lifecycle.submit_bundle(requester=ana, profiles=three_dbs, duration=H, justification=JUSTIFICATION)
    assert len({r.bundle for r in reqs}) == 1
    lifecycle.approve_request(reqs[1].pk, actor=otto, comment="all three")
    assert set(AccessRequest.objects.values_list("status", flat=True)) == {"approved"}
    grants = [lifecycle.provision_grant(g.pk) for g in Grant.objects.filter(request__in=reqs)]
    assert sorted(g.profile.name for g in grants) == ["appdb-readonly", "appdb2-readonly", "appdb3-readonly"]
    assert {g.status for g in grants} == {"active"}


def test_denying_a_bundle_denies_all_of_it(ana, otto, three_dbs):
    reqs = lifecycle.submit_bundle(requester=ana, profiles=three_dbs, duration=H, justification=JUSTIFICATION)
    lifecycle.deny_request(reqs[0].pk, actor=otto)
    assert set(AccessRequest.objects.values_list("status", flat=True)) == {"denied"}


def test_a_bundle_with_a_bad_member_creates_nothing(ana, three_dbs):
    three_dbs[2].enabled = False
    three_dbs[2].save()
    with pytest.raises(lifecycle.InvalidRequestError):
        lifecycle.submit_bundle(requester=ana, profiles=three_dbs, duration=H, justification=JUSTIFICATION)
    assert not AccessRequest.objects.exists()


# Concurrent decisions ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_approval_and_a_denial_at_once_give_one_outcome(pending_request, marc, otto):
    outcomes, barrier = [], threading.Barrier(2)

    def decide(actor, approve):
        barrier.wait()
        try:
            (lifecycle.approve_request if approve else lifecycle.deny_request)(pending_request.pk, actor=actor, step=0)
            outcomes.append("approved" if approve else "denied")
        except lifecycle.TransitionError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=a) for a in ((marc, True), (otto, False))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pending_request.refresh_from_db()
    assert sorted(outcomes) in (["approved", "refused"], ["denied", "refused"])
    assert pending_request.status == [o for o in outcomes if o != "refused"][0]
    assert Grant.objects.filter(request=pending_request).count() == (1 if pending_request.status == "approved" else 0)


@pytest.mark.postgres_only("lines the deciders up behind a PostgreSQL row lock (FOR UPDATE) held from another session")
@pytest.mark.django_db(transaction=True)
def test_two_approvers_deciding_different_members_of_a_bundle_at_once_do_not_deadlock(ana, marc, otto, three_dbs):
    reqs = lifecycle.submit_bundle(requester=ana, profiles=three_dbs, duration=H, justification=JUSTIFICATION)
    first, middle, last = sorted(reqs, key=lambda r: r.pk)
    db = connection.settings_dict
    dsn = f"host={db['HOST']} port={db['PORT']} user={db['USER']} dbname={db['NAME']}"
    outcomes = []

    def decide(actor, req, approve):
        try:
            (lifecycle.approve_request if approve else lifecycle.deny_request)(req.pk, actor=actor)
            outcomes.append("approved" if approve else "denied")
        except lifecycle.TransitionError:
            outcomes.append("refused")  # the other approver decided the bundle first
        except Exception as exc:  # noqa: BLE001 (a deadlock is what this test looks for)
            outcomes.append(f"error: {exc}")
        finally:
            connection.close()

    # Hold the middle member, so that both deciders are inside their locking
    # before either can finish: marc approves the first member, otto denies the last.
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM grants_accessrequest WHERE id = %s FOR UPDATE", [middle.pk])
        threads = [threading.Thread(target=decide, args=args) for args in ((marc, first, True), (otto, last, False))]
        for t in threads:
            t.start()
        with psycopg.connect(dsn, autocommit=True) as watcher:
            for _ in range(600):
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchone()[0]
                if waiting >= 2:
                    break
                time.sleep(0.05)
        holder.rollback()
    for t in threads:
        t.join()
    assert sorted(outcomes) in (["approved", "refused"], ["denied", "refused"]), outcomes
    winner = next(o for o in outcomes if o != "refused")
    assert set(AccessRequest.objects.filter(bundle=first.bundle).values_list("status", flat=True)) == {winner}
    assert Grant.objects.filter(request__bundle=first.bundle).count() == (3 if winner == "approved" else 0)


def test_break_glass_emails_the_profiles_approvers(
    ana, otto, marc, glass, mailoutbox, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr("django_q.conf.Conf.SYNC", True)  # run the enqueued task in this process
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.submit_request(
            requester=ana,
            profile=glass,
            duration=H,
            justification="Production is down, orders table locked",
            break_glass=True,
        )
    sent = [m for m in mailoutbox if "Break-glass" in m.subject]
    # One message per approver: nobody sees the others' addresses.
    assert sorted(m.to for m in sent) == [["marc@example.com"], ["otto@example.com"]]
    assert all("Production is down" in m.body and "/access/reviews/" in m.body for m in sent)
