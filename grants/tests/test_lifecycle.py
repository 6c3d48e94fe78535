"""The state machine: every legal transition works, every illegal one raises and changes nothing."""

import datetime
import threading

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from audit.log import verify
from audit.models import AuditEvent
from grants import lifecycle, tasks
from grants.models import AccessRequest, DriftFinding, Grant

from .conftest import JUSTIFICATION

RS, GS = AccessRequest.Status, Grant.Status


def actions(obj):
    return list(
        AuditEvent.objects.filter(object_type=obj._meta.model_name, object_id=str(obj.pk))
        .order_by("id")
        .values_list("action", flat=True)
    )


# Requests ------------------------------------------------------------------


def test_submitted_request_is_pending_and_audited(pending_request, ana):
    assert pending_request.status == RS.PENDING
    event = AuditEvent.objects.get(action="request.submitted")
    assert event.actor == ana
    assert event.details["justification"] == JUSTIFICATION
    assert event.details["profile"] == "appdb-readonly"


def test_approval_schedules_one_grant(approved_request, otto):
    approved_request.refresh_from_db()
    assert approved_request.status == RS.APPROVED
    assert approved_request.decided_by == otto
    assert approved_request.grant.status == GS.SCHEDULED
    assert approved_request.grant.expires_at is None  # the clock has not started


def test_denial_creates_no_grant(pending_request, marc):
    lifecycle.deny_request(pending_request.pk, actor=marc, comment="use the replica")
    pending_request.refresh_from_db()
    assert pending_request.status == RS.DENIED
    assert pending_request.decision_comment == "use the replica"
    assert not Grant.objects.exists()


def test_requester_can_cancel_own_pending_request(pending_request, ana):
    lifecycle.cancel_request(pending_request.pk, actor=ana)
    pending_request.refresh_from_db()
    assert pending_request.status == RS.CANCELLED
    assert actions(pending_request) == ["request.submitted", "request.cancelled"]


def test_nobody_else_can_cancel_a_request(pending_request, marc):
    with pytest.raises(lifecycle.NotAllowedError):
        lifecycle.cancel_request(pending_request.pk, actor=marc)
    pending_request.refresh_from_db()
    assert pending_request.status == RS.PENDING


def test_undecided_request_lapses_after_the_timeout(pending_request, settings):
    settings.JIT_REQUEST_TIMEOUT = 60
    assert lifecycle.lapse_stale_requests(timezone.now()) == 0
    assert lifecycle.lapse_stale_requests(timezone.now() + datetime.timedelta(seconds=61)) == 1
    pending_request.refresh_from_db()
    assert pending_request.status == RS.LAPSED
    assert actions(pending_request)[-1] == "request.lapsed"


@pytest.mark.parametrize("first", ["approve", "deny", "cancel", "lapse"])
@pytest.mark.parametrize("then", ["approve", "deny", "cancel"])
def test_a_decided_request_cannot_be_decided_again(pending_request, otto, ana, settings, first, then):
    do = {
        "approve": lambda: lifecycle.approve_request(pending_request.pk, actor=otto),
        "deny": lambda: lifecycle.deny_request(pending_request.pk, actor=otto),
        "cancel": lambda: lifecycle.cancel_request(pending_request.pk, actor=ana),
        "lapse": lambda: lifecycle.lapse_stale_requests(timezone.now() + datetime.timedelta(days=30)),
    }
    do[first]()
    pending_request.refresh_from_db()
    status_after_first = pending_request.status
    with pytest.raises(lifecycle.TransitionError):
        do[then]()
    pending_request.refresh_from_db()
    assert pending_request.status == status_after_first
    assert Grant.objects.count() == (1 if first == "approve" else 0)


def test_approver_cannot_approve_own_request(otto, profile, groups):
    otto.groups.add(groups["engineers"])
    own = lifecycle.submit_request(
        requester=otto, profile=profile, duration=datetime.timedelta(hours=1), justification=JUSTIFICATION
    )
    with pytest.raises(lifecycle.NotAllowedError, match="your own request"):
        lifecycle.approve_request(own.pk, actor=otto)
    own.refresh_from_db()
    assert own.status == RS.PENDING
    refused = AuditEvent.objects.get(action="request.decision_refused")
    assert refused.actor == otto and refused.details["reason"] == "You cannot decide your own request."


def test_outsider_cannot_approve_and_the_attempt_is_recorded(pending_request, eve):
    with pytest.raises(lifecycle.NotAllowedError):
        lifecycle.approve_request(pending_request.pk, actor=eve)
    pending_request.refresh_from_db()
    assert pending_request.status == RS.PENDING
    assert AuditEvent.objects.filter(action="request.decision_refused", actor=eve).exists()


def test_manager_may_approve_where_the_profile_says_so(ana, marc, otto, rw_profile):
    req = lifecycle.submit_request(
        requester=ana, profile=rw_profile, duration=datetime.timedelta(hours=1), justification=JUSTIFICATION
    )
    with pytest.raises(lifecycle.NotAllowedError):
        lifecycle.approve_request(req.pk, actor=otto)  # an approver elsewhere, not her manager
    lifecycle.approve_request(req.pk, actor=marc)
    req.refresh_from_db()
    assert req.status == RS.APPROVED


@pytest.mark.parametrize(
    "duration, justification, ticket, field",
    [
        (datetime.timedelta(0), JUSTIFICATION, "", "duration"),
        (datetime.timedelta(minutes=-5), JUSTIFICATION, "", "duration"),
        (datetime.timedelta(hours=5), JUSTIFICATION, "", "duration"),
        (datetime.timedelta(hours=1), "", "", "justification"),
        (datetime.timedelta(hours=1), "because", "", "justification"),
        (datetime.timedelta(hours=1), "x" * 2001, "", "justification"),
        (datetime.timedelta(hours=1), JUSTIFICATION, "T" * 101, "ticket"),
    ],
)
def test_bad_input_names_the_field_and_creates_nothing(ana, profile, duration, justification, ticket, field):
    with pytest.raises(lifecycle.InvalidRequestError) as exc:
        lifecycle.submit_request(
            requester=ana, profile=profile, duration=duration, justification=justification, ticket=ticket
        )
    assert field in exc.value.errors
    assert not AccessRequest.objects.exists()


def test_disabled_profile_cannot_be_requested(ana, profile):
    profile.enabled = False
    profile.save()
    with pytest.raises(lifecycle.InvalidRequestError, match="disabled"):
        lifecycle.submit_request(
            requester=ana, profile=profile, duration=datetime.timedelta(hours=1), justification=JUSTIFICATION
        )


def test_user_outside_requestable_groups_is_refused_and_recorded(eve, profile):
    with pytest.raises(lifecycle.NotAllowedError):
        lifecycle.submit_request(
            requester=eve, profile=profile, duration=datetime.timedelta(hours=1), justification=JUSTIFICATION
        )
    assert not AccessRequest.objects.exists()
    assert AuditEvent.objects.filter(action="request.refused", actor=eve).exists()


def test_double_submission_gives_one_request(pending_request, ana, profile):
    with pytest.raises(lifecycle.InvalidRequestError, match="already have a pending request"):
        lifecycle.submit_request(
            requester=ana, profile=profile, duration=datetime.timedelta(hours=1), justification=JUSTIFICATION
        )
    assert AccessRequest.objects.count() == 1


def test_holder_of_active_access_cannot_request_it_again(active_grant, ana, profile):
    with pytest.raises(lifecycle.InvalidRequestError, match="already hold"):
        lifecycle.submit_request(
            requester=ana, profile=profile, duration=datetime.timedelta(hours=1), justification=JUSTIFICATION
        )


# Grants --------------------------------------------------------------------


def test_provisioning_starts_the_clock_when_access_is_usable(approved_request):
    before = timezone.now()
    grant = lifecycle.provision_grant(approved_request.grant.pk)
    assert grant.status == GS.ACTIVE
    assert grant.starts_at >= before
    assert grant.expires_at == grant.starts_at + datetime.timedelta(minutes=30)
    assert grant.external_ref == f"jit_g{grant.pk}"
    assert actions(grant) == ["grant.scheduled", "grant.provisioned"]


def test_provisioning_an_active_grant_again_is_a_no_op(active_grant):
    assert lifecycle.provision_grant(active_grant.pk) is None
    active_grant.refresh_from_db()
    assert active_grant.status == GS.ACTIVE


def test_release_revokes_and_verifies_on_the_target(active_grant, ana, pg_cluster):
    creds = lifecycle.reveal_credentials(active_grant.pk, actor=ana)
    session = psycopg.connect(creds["dsn"], autocommit=True)
    lifecycle.revoke_grant(active_grant.pk, actor=ana, reason="released")
    grant = lifecycle.complete_revocation(active_grant.pk)
    assert grant.status == GS.REVOKED
    assert grant.end_reason == "released" and grant.ended_by == ana
    assert grant.revoked_at <= grant.verified_at
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(creds["dsn"])
    assert actions(grant)[-2:] == ["grant.revoke_requested", "grant.revoked"]


def test_a_function_the_user_left_is_dropped_and_listed_in_the_revoked_event_and_a_drift_finding(
    active_grant, ana, pg_cluster
):
    creds = lifecycle.reveal_credentials(active_grant.pk, actor=ana)
    with psycopg.connect(pg_cluster.dsn("appdb"), autocommit=True) as admin:
        # PostgreSQL 14 and older let every role create in schema public.
        admin.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        try:
            with psycopg.connect(creds["dsn"], autocommit=True) as session:
                session.execute("CREATE FUNCTION public.peek() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'")
        finally:
            admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")

        lifecycle.revoke_grant(active_grant.pk, actor=ana, reason="released")
        grant = lifecycle.complete_revocation(active_grant.pk)

        assert grant.status == GS.REVOKED
        assert admin.execute("SELECT to_regprocedure('public.peek()')").fetchone()[0] is None
    left = [{"database": "appdb", "kind": "function", "name": "public.peek()", "action": "dropped"}]
    assert AuditEvent.objects.get(action="grant.revoked", object_id=str(grant.pk)).details["objects"] == left
    finding = DriftFinding.objects.get(grant=grant)
    assert finding.kind == DriftFinding.Kind.OBJECTS and "function appdb.public.peek() dropped" in finding.action
    assert AuditEvent.objects.get(action="drift.found").details["objects"] == left


def test_only_the_holder_may_release(active_grant, otto):
    with pytest.raises(lifecycle.NotAllowedError):
        lifecycle.revoke_grant(active_grant.pk, actor=otto, reason="released")
    active_grant.refresh_from_db()
    assert active_grant.status == GS.ACTIVE


def test_only_staff_with_change_permission_may_revoke(active_grant, otto, admin_user):
    with pytest.raises(lifecycle.NotAllowedError):
        lifecycle.revoke_grant(active_grant.pk, actor=otto, reason="revoked")
    lifecycle.revoke_grant(active_grant.pk, actor=admin_user, reason="revoked")
    active_grant.refresh_from_db()
    assert active_grant.status == GS.REVOKING and active_grant.ended_by == admin_user


@pytest.mark.parametrize("state", ["revoking", "revoked"])
def test_an_ending_or_ended_grant_cannot_be_revoked_again(active_grant, ana, state):
    lifecycle.revoke_grant(active_grant.pk, actor=ana, reason="released")
    if state == "revoked":
        lifecycle.complete_revocation(active_grant.pk)
    with pytest.raises(lifecycle.TransitionError):
        lifecycle.revoke_grant(active_grant.pk, actor=ana, reason="released")
    active_grant.refresh_from_db()
    assert active_grant.status == state


def test_completing_a_revocation_twice_is_a_no_op(active_grant, ana):
    lifecycle.revoke_grant(active_grant.pk, actor=ana, reason="released")
    first = lifecycle.complete_revocation(active_grant.pk)
    assert lifecycle.complete_revocation(active_grant.pk) is None
    active_grant.refresh_from_db()
    assert active_grant.verified_at == first.verified_at


def test_a_grant_revoked_before_provisioning_never_becomes_active(approved_request, admin_user):
    grant = approved_request.grant
    lifecycle.revoke_grant(grant.pk, actor=admin_user, reason="revoked")
    assert lifecycle.provision_grant(grant.pk) is None
    assert lifecycle.complete_revocation(grant.pk).status == GS.REVOKED


def test_expired_grant_is_revoked_by_the_sweep(active_grant, ana, pg_cluster):
    creds = lifecycle.reveal_credentials(active_grant.pk, actor=ana)
    session = psycopg.connect(creds["dsn"], autocommit=True)
    # Pretend the clock ran out: move expiry into the past in the portal.
    Grant.objects.filter(pk=active_grant.pk).update(expires_at=timezone.now() - datetime.timedelta(seconds=1))
    assert tasks.expire_due() == 1
    active_grant.refresh_from_db()
    assert active_grant.status == GS.REVOKED and active_grant.end_reason == "expired"
    assert active_grant.ended_by is None
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    assert tasks.expire_due() == 0


def test_unreachable_target_is_retried_then_fails_with_its_message(approved_request, monkeypatch):
    monkeypatch.setenv("JIT_TEST_PG_DSN", "postgresql://jitadmin:x@127.0.0.1:1/postgres")
    grant_id = approved_request.grant.pk
    for _attempt in range(1, lifecycle.MAX_PROVISION_ATTEMPTS + 1):
        Grant.objects.filter(pk=grant_id).update(next_attempt_at=None)
        lifecycle.provision_grant(grant_id)
    grant = Grant.objects.get(pk=grant_id)
    assert grant.status == GS.FAILED
    assert grant.attempts == lifecycle.MAX_PROVISION_ATTEMPTS
    assert "127.0.0.1" in grant.last_error
    assert AuditEvent.objects.filter(action="grant.failed", object_id=str(grant_id)).exists()


def test_missing_group_role_fails_at_once(ana, otto, profile):
    profile.scope = {"roles": ["no_such_role"]}
    profile.save()
    req = lifecycle.submit_request(
        requester=ana, profile=profile, duration=datetime.timedelta(minutes=30), justification=JUSTIFICATION
    )
    lifecycle.approve_request(req.pk, actor=otto)
    grant = lifecycle.provision_grant(req.grant.pk)
    assert grant.status == GS.FAILED
    assert "no_such_role" in grant.last_error


def test_a_profile_handing_out_pg_execute_server_program_fails_at_provisioning_and_creates_no_account(
    profile, ana, otto, pg_cluster
):
    profile.scope = {"roles": ["app_readonly", "pg_execute_server_program"]}
    profile.save()
    request = lifecycle.submit_request(
        requester=ana, profile=profile, duration=datetime.timedelta(minutes=30), justification=JUSTIFICATION
    )
    lifecycle.approve_request(request.pk, actor=otto, comment="ok")

    grant = lifecycle.provision_grant(request.grant.pk)

    assert grant.status == GS.FAILED
    assert "pg_execute_server_program runs programs on the database server" in grant.last_error
    with psycopg.connect(pg_cluster.admin_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", [f"jit_g{grant.pk}"]).fetchone()[0] == 0


def test_revocation_that_cannot_reach_the_target_stays_revoking_and_backs_off(
    active_grant, ana, settings, monkeypatch, pg_cluster
):
    lifecycle.revoke_grant(active_grant.pk, actor=ana, reason="released")
    settings.JIT_REVOKE_FAILING_AFTER = 2
    monkeypatch.setenv("JIT_TEST_PG_DSN", "postgresql://jitadmin:x@127.0.0.1:1/postgres")
    for _ in range(2):
        Grant.objects.filter(pk=active_grant.pk).update(next_attempt_at=timezone.now())
        lifecycle.complete_revocation(active_grant.pk)
    monkeypatch.setenv("JIT_TEST_PG_DSN", pg_cluster.admin_dsn)
    grant = Grant.objects.get(pk=active_grant.pk)
    assert grant.status == GS.REVOKING
    assert grant.revocation_failing
    assert grant.verified_at is None
    assert grant.next_attempt_at > timezone.now()
    # Once the target answers again, the sweep finishes the job.
    Grant.objects.filter(pk=grant.pk).update(next_attempt_at=timezone.now())
    tasks.sweep()
    grant.refresh_from_db()
    assert grant.status == GS.REVOKED and grant.verified_at


@pytest.mark.django_db(transaction=True)
def test_two_approvals_at_once_give_exactly_one_grant(pending_request, marc, otto):
    errors, barrier = [], threading.Barrier(2)

    def approve(actor):
        barrier.wait()
        try:
            lifecycle.approve_request(pending_request.pk, actor=actor)
        except lifecycle.TransitionError as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=approve, args=(u,)) for u in (marc, otto)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Grant.objects.filter(request=pending_request).count() == 1
    assert len(errors) == 1
    assert AuditEvent.objects.filter(action="request.approved").count() == 1


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


def _expired_grants(n, like, approver, profile) -> list[Grant]:
    """`n` grants provisioned on the target for people in `like`'s groups, all past their expiry a second ago."""
    grants = []
    for i in range(n):
        user = get_user_model().objects.create_user(f"burst{i}")
        user.groups.add(*like.groups.all())
        req = lifecycle.submit_request(
            requester=user, profile=profile, duration=datetime.timedelta(minutes=5), justification=JUSTIFICATION
        )
        lifecycle.approve_request(req.pk, actor=approver)
        grants.append(lifecycle.provision_grant(req.grant.pk))
    Grant.objects.filter(pk__in=[g.pk for g in grants]).update(
        expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )
    return grants


def test_a_burst_of_expiries_is_revoked_in_batches_and_the_trail_stays_intact(ana, otto, profile, pg_cluster, settings):

    settings.JIT_EXPIRY_BATCH = 3
    grants = _expired_grants(7, ana, otto, profile)
    assert tasks.expire_due() == 7
    assert set(Grant.objects.filter(pk__in=[g.pk for g in grants]).values_list("status", flat=True)) == {"revoked"}
    assert AuditEvent.objects.filter(action="grant.revoked").count() == 7
    with psycopg.connect(pg_cluster.admin_dsn) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", [[g.external_ref for g in grants]]
        ).fetchone()[0]
    assert left == 0
    assert verify().ok


def test_a_burst_is_taken_in_growing_batches_and_a_quiet_pass_in_small_ones(
    ana, otto, profile, pg_cluster, settings, monkeypatch
):
    settings.JIT_EXPIRY_BATCH, settings.JIT_EXPIRY_BATCH_MAX = 2, 8
    grants = _expired_grants(21, ana, otto, profile)
    taken = []
    revoke = lifecycle.revoke_due_expiries
    monkeypatch.setattr(lifecycle, "revoke_due_expiries", lambda **kw: taken.append(kw["limit"]) or revoke(**kw))

    assert tasks.expire_due() == 21

    # 2, 4, 8 (the cap), 8: 22 places for 21 grants; then one more look finds nothing.
    assert taken == [2, 4, 8, 8, 2]
    assert set(Grant.objects.filter(pk__in=[g.pk for g in grants]).values_list("status", flat=True)) == {"revoked"}
