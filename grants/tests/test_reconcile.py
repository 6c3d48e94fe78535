"""The reconciler finds and removes what no grant explains on the real target, and reports, not crashes."""

import psycopg
import pytest
from django.utils import timezone
from psycopg import sql

from audit.models import AuditEvent
from grants import lifecycle, reconcile
from grants.connectors import get_connector
from grants.models import DriftFinding, Grant, Target


@pytest.fixture(autouse=True)
def clean_target(target):
    """Start from a target without grant roles: other tests leave theirs (the cluster lives for the session)."""
    with get_connector(target) as connector:
        for ref in connector.list_managed():
            connector.revoke(reconcile._stub(int(ref.removeprefix("jit_g"))))


def roles(pg_cluster, like="jit_g%"):
    with psycopg.connect(pg_cluster.admin_dsn) as conn:
        return {r for (r,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", [like]).fetchall()}


def admin_sql(pg_cluster, statement, *idents):
    with psycopg.connect(pg_cluster.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL(statement).format(*map(sql.Identifier, idents)))


def test_a_role_made_by_hand_with_the_prefix_is_found_and_removed(target, pg_cluster):
    admin_sql(pg_cluster, "CREATE ROLE {} LOGIN PASSWORD 'x'", "jit_g999999")
    findings = reconcile.reconcile_target(target)
    assert [(f.external_ref, f.kind, f.action) for f in findings] == [
        ("jit_g999999", "orphan", "removed from the target")
    ]
    assert "jit_g999999" not in roles(pg_cluster)
    assert AuditEvent.objects.filter(action="drift.found", details__external_ref="jit_g999999").exists()
    target.refresh_from_db()
    assert target.reconciled_at and "1 finding" in target.reconcile_message


def test_an_orphan_roles_function_is_dropped_and_listed_in_the_finding(target, pg_cluster):
    with psycopg.connect(pg_cluster.dsn("appdb"), autocommit=True) as conn:
        conn.execute("CREATE ROLE jit_g999998 NOLOGIN")
        conn.execute("CREATE FUNCTION public.orphaned() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'")
        conn.execute("ALTER FUNCTION public.orphaned() OWNER TO jit_g999998")

    [finding] = reconcile.reconcile_target(target)

    assert finding.action == "removed from the target, with 1 object(s) it had made or granted"
    event = AuditEvent.objects.get(action="drift.found", details__external_ref="jit_g999998")
    assert event.details["objects"] == [
        {"database": "appdb", "kind": "function", "name": "public.orphaned()", "action": "dropped"}
    ]
    with psycopg.connect(pg_cluster.dsn("appdb")) as conn:
        assert conn.execute("SELECT to_regprocedure('public.orphaned()')").fetchone()[0] is None


def test_roles_that_merely_share_the_prefix_are_left_alone(target, pg_cluster):
    admin_sql(pg_cluster, "CREATE ROLE {} NOLOGIN", "jit_gadmin")
    try:
        assert reconcile.reconcile_target(target) == []
        assert "jit_gadmin" in roles(pg_cluster)
    finally:
        admin_sql(pg_cluster, "DROP ROLE {}", "jit_gadmin")


def test_an_active_grant_is_explained(active_grant):
    assert reconcile.reconcile_target(active_grant.profile.target) == []
    assert active_grant.external_ref in roles_of(active_grant)


def roles_of(grant):
    with get_connector(grant.profile.target) as c:
        return c.list_managed()


def test_a_worker_killed_between_role_created_and_grant_marked_active_leaves_no_orphan(approved_request, pg_cluster):
    grant = Grant.objects.select_related("profile__target").get(request=approved_request)

    # What a provisioning task had done on the target when its worker died:
    # the role exists, the portal's transaction never committed.
    grant.expires_at = timezone.now() + grant.duration
    with get_connector(grant.profile.target) as connector:
        connector.provision(grant)
    assert f"jit_g{grant.pk}" in roles(pg_cluster)
    findings = reconcile.reconcile_target(grant.profile.target)
    assert [f.kind for f in findings] == ["orphan"]
    assert f"jit_g{grant.pk}" not in roles(pg_cluster)
    assert Grant.objects.get(pk=grant.pk).status == "scheduled"
    # The sweeper's retry provisions it properly afterwards.
    assert lifecycle.provision_grant(grant.pk).status == "active"


def test_access_that_should_be_gone_is_revoked_again(active_grant, ana, pg_cluster):
    lifecycle.revoke_grant(active_grant.pk, actor=ana, reason="released")
    lifecycle.complete_revocation(active_grant.pk)
    admin_sql(pg_cluster, "CREATE ROLE {} LOGIN PASSWORD 'back'", active_grant.external_ref)  # someone restored it
    findings = reconcile.reconcile_target(active_grant.profile.target)
    assert [(f.kind, f.grant_id) for f in findings] == [("not_revoked", active_grant.pk)]
    assert active_grant.external_ref not in roles(pg_cluster)


def test_an_active_grant_whose_role_vanished_is_reported(active_grant, pg_cluster):
    admin_sql(pg_cluster, "DROP ROLE {}", active_grant.external_ref)
    findings = reconcile.reconcile_target(active_grant.profile.target)
    assert [(f.kind, f.action) for f in findings] == [("missing", "reported")]
    assert reconcile.reconcile_target(active_grant.profile.target) == []  # reported once


def test_a_target_that_is_down_is_reported_not_a_crash(target, monkeypatch):
    monkeypatch.setenv("JIT_TEST_PG_DSN", "postgresql://jitadmin:x@127.0.0.1:1/postgres")
    assert reconcile.reconcile_all() == {target.name: 0}
    target.refresh_from_db()
    assert target.health == Target.Health.UNREACHABLE
    assert target.reconcile_message.startswith("Could not reconcile")
    assert AuditEvent.objects.filter(action="reconcile.failed").exists()
    assert not DriftFinding.objects.exists()


def test_admins_are_emailed_about_drift(
    target, pg_cluster, admin_user, mailoutbox, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr("django_q.conf.Conf.SYNC", True)  # the notification task runs in this process
    admin_sql(pg_cluster, "CREATE ROLE {} LOGIN PASSWORD 'x'", "jit_g888888")
    with django_capture_on_commit_callbacks(execute=True):  # announced after commit, as the worker's would be
        reconcile.reconcile_target(target)
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["root@example.com"]
    assert "jit_g888888" in mailoutbox[0].body


def test_the_targets_page_shows_health_last_reconcile_and_drift_to_staff_only(
    client, target, pg_cluster, admin_user, ana
):
    admin_sql(pg_cluster, "CREATE ROLE {} LOGIN PASSWORD 'x'", "jit_g777777")
    reconcile.reconcile_target(target)
    client.force_login(ana)
    assert client.get("/access/targets/").status_code == 403
    client.force_login(admin_user)
    page = client.get("/access/targets/").content.decode()
    assert "appdb-cluster" in page and "1 finding(s)" in page
    assert "<code>jit_g777777</code>" in page and "removed from the target" in page
