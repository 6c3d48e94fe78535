"""The report pages' filters: by person, target, profile, outcome, period and review state, and bad input."""

import datetime
import re

import pytest
from django.db.models import Count, F, Max, Q
from django.utils import timezone

from audit.models import AuditEvent
from grants import lifecycle, tallies
from grants.models import AccessProfile, AccessRequest, ApproverDecisionDay, Grant, ProfileDecisionDay, Target
from reports import downloads

from .conftest import approved, ask
from .support import ACCESS, BREAK_GLASS, DECISIONS, PAGES, as_dicts, download, records, text, timeline, today

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
