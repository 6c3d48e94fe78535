"""What each grant was used for: the digest revocation keeps on the grant, its audit trail and the grant page.

PostgreSQL end to end on the suite's target cluster (it preloads
pg_stat_statements); the connector's own reads are in
connectors/test_activity_postgres.py, the SSH guard's reports in
test_activity_ssh.py.
"""

import html

import psycopg
from django.urls import reverse

from audit.models import AuditEvent
from grants import activity, lifecycle
from grants.models import Grant

GS = Grant.Status


def _use(active_grant, ana, *statements):
    creds = lifecycle.reveal_credentials(active_grant.pk, actor=ana)
    conn = psycopg.connect(creds["dsn"], autocommit=True)
    for statement in statements:
        conn.execute(statement)
    return conn


def test_a_revoked_grant_keeps_what_its_role_ran_and_the_revoked_event_names_its_hash(active_grant, ana):
    session = _use(active_grant, ana, "SELECT count(*) FROM public.orders", "SELECT count(*) FROM public.orders")
    lifecycle.revoke_grant(active_grant.pk, actor=ana, reason="released")

    grant = lifecycle.complete_revocation(active_grant.pk)

    assert grant.status == GS.REVOKED
    grant.refresh_from_db()
    assert grant.activity["source"] == "pg_stat_statements"
    [count] = [s for s in grant.activity["statements"] if s["query"] == "SELECT count(*) FROM public.orders"]
    assert (count["calls"], count["database"]) == (2, "appdb")
    assert len(grant.activity["open_sessions"]) == 1
    event = AuditEvent.objects.get(action="grant.revoked", object_id=str(grant.pk))
    assert event.details["activity"] == grant.activity["summary"]
    assert event.details["activity_sha256"] == activity.digest_hash(grant.activity)
    session.close()


def test_the_grant_page_shows_the_statements_and_the_sessions_revocation_ended(client, active_grant, ana):
    session = _use(active_grant, ana, "SELECT customer FROM public.orders WHERE amount > 100")
    lifecycle.revoke_grant(active_grant.pk, actor=ana, reason="released")
    lifecycle.complete_revocation(active_grant.pk)
    session.close()
    client.force_login(ana)

    page = client.get(reverse("grants:grant_detail", args=[active_grant.pk])).content.decode()

    assert "What the target kept about this grant" in page
    # Escaped: a statement text is what a grant user typed.
    assert "<code>SELECT customer FROM public.orders WHERE amount &gt; $1</code>" in page
    assert "Sessions open at revocation (ended by it)" in page
    summary = Grant.objects.get(pk=active_grant.pk).activity["summary"]
    assert summary.endswith("1 open at revocation") and html.escape(summary) in page


def test_an_active_grant_page_shows_no_activity_yet(client, active_grant, ana):
    client.force_login(ana)
    page = client.get(reverse("grants:grant_detail", args=[active_grant.pk])).content.decode()
    assert "What the target kept" not in page


def test_digests_are_stored_only_for_grants_whose_connector_read_one(active_grant, ana):
    lifecycle.revoke_grant(active_grant.pk, actor=ana, reason="released")
    grant = Grant.objects.get(pk=active_grant.pk)

    activity.store_digests([grant], {grant.pk + 1: {"summary": "not this grant's"}})

    grant.refresh_from_db()
    assert grant.activity == {}
    assert activity.audit_details(grant) == {}
