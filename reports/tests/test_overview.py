"""The Reports overview (/audit/overview/): its charts, the tables of their numbers, the period, and who may see it."""

import datetime
from html.parser import HTMLParser

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from grants import lifecycle, reconcile
from grants.models import AccessProfile, AccessRequest, DriftFinding, Grant, Target
from reports.charts import COUNT, Axis, Chart, Series
from reports.filters import OverviewPeriodForm

from .conftest import approved, ask, held

OVERVIEW = reverse("audit:overview")
CHARTS = ("grants", "decision-time", "auto-approval", "break-glass", "drift", "expiry-lag")


class _ChartTables(HTMLParser):
    """Collect each `table.chart-table` as {its data-chart: [[cell text, ...], ...]} (header, body and total rows)."""

    def __init__(self):
        super().__init__()
        self.tables, self._current, self._cell = {}, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and "chart-table" in (attrs.get("class") or ""):
            self._current = self.tables.setdefault(attrs["data-chart"], [])
        elif self._current is not None and tag == "tr":
            self._current.append([])
        elif self._current is not None and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if self._cell is not None and tag in ("td", "th"):
            self._current[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._current = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def chart_tables(response) -> dict[str, dict[str, dict[str, str]]]:
    """Return each chart's table as {day (or "Total"): {column header: cell}}."""
    parser = _ChartTables()
    parser.feed(response.content.decode())
    found = {}
    for slug, (header, *rows) in parser.tables.items():
        found[slug] = {row[0]: dict(zip(header[1:], row[1:], strict=True)) for row in rows}
    return found


def at(day: datetime.date, hour: int, minute: int = 0) -> datetime.datetime:
    return timezone.make_aware(datetime.datetime.combine(day, datetime.time(hour, minute)))


def decided(req, day, *, asked: tuple[int, int], answered: tuple[int, int]):
    """Move a decided request (and its grant, made at the decision) to `day`, asked and answered at those times."""
    AccessRequest.objects.filter(pk=req.pk).update(created_at=at(day, *asked), decided_at=at(day, *answered))
    Grant.objects.filter(request_id=req.pk).update(created_at=at(day, *answered))


@pytest.fixture
def other_profile(groups, pg_target_env):
    """A profile on a second target, so that the grants chart has two layers."""
    target = Target.objects.create(
        name="reports-cluster",
        kind="postgres",
        config={"host": pg_target_env.host, "port": pg_target_env.port, "dbname": "appdb"},
        secret_env="JIT_TEST_PG_DSN",
    )
    p = AccessProfile.objects.create(
        name="reports-readonly", title="reports read-only", target=target, scope={"roles": ["app_readonly"]},
        max_duration=datetime.timedelta(hours=4), approver_group=groups["db-approvers"],
    )  # fmt: skip
    p.requestable_by.add(groups["engineers"])
    return p


@pytest.fixture
def scene(ana, bob, otto, marc, groups, django_user_model, target, profile, quick_profile, other_profile):
    """Three days of the portal, built through the lifecycle, then moved to known times (see the numbers below)."""
    today = timezone.localdate()
    day_a, day_b = today - datetime.timedelta(days=3), today - datetime.timedelta(days=1)
    # Day A: two approvals by people, after 30 and 90 minutes.
    decided(approved(ana, profile, otto).request, day_a, asked=(10, 0), answered=(10, 30))
    decided(approved(bob, profile, marc).request, day_a, asked=(11, 0), answered=(12, 30))
    # Day B: approved after 10 minutes (the second target), denied after 60, a policy rule, break-glass.
    decided(approved(ana, other_profile, otto).request, day_b, asked=(9, 0), answered=(9, 10))
    denied = ask(bob, quick_profile, minutes=90, justification="Rewrite the orders table by hand")
    lifecycle.deny_request(denied.pk, actor=otto, comment="Use the migration pipeline")
    decided(denied, day_b, asked=(10, 0), answered=(11, 0))
    decided(ask(bob, quick_profile, minutes=20), day_b, asked=(9, 20), answered=(9, 20))
    emergency = ask(
        ana, quick_profile, minutes=60, justification="Production is down: the orders table", break_glass=True
    )
    decided(emergency, day_b, asked=(13, 0), answered=(13, 0))
    # Expiry: two grants held today, expired on day A and confirmed gone 2 and 10 minutes later; a third
    # past its expiry on day B and still active (nothing swept it yet).
    holders = []
    for n in (1, 2, 3):
        holders.append(django_user_model.objects.create_user(f"holder{n}", f"holder{n}@example.com"))
        holders[-1].groups.add(groups["engineers"])
    lagging = [held(holders[0], profile, otto), held(holders[1], profile, otto)]
    Grant.objects.filter(pk__in=[g.pk for g in lagging]).update(
        expires_at=timezone.now() - datetime.timedelta(minutes=1)
    )
    assert sorted(lifecycle.begin_due_expiries(limit=10)) == sorted(g.pk for g in lagging)
    for grant, (expired, verified) in zip(lagging, [((15, 0), (15, 2)), ((16, 0), (16, 10))], strict=True):
        lifecycle.complete_revocation(grant.pk)
        Grant.objects.filter(pk=grant.pk).update(expires_at=at(day_a, *expired), verified_at=at(day_a, *verified))
    late = held(holders[2], profile, otto)
    Grant.objects.filter(pk=late.pk).update(expires_at=at(day_b, 14))
    # Drift, through the reconciler's own writer: two orphans on day A, a missing grant on day B.
    for n in (1, 2):
        finding = reconcile._finding(target, f"jit_g99999{n}", "orphan", action="reported")
        DriftFinding.objects.filter(pk=finding.pk).update(found_at=at(day_a, 8, n))
    finding = reconcile._finding(target, late.external_ref, "missing", grant=late, action="reported")
    DriftFinding.objects.filter(pk=finding.pk).update(found_at=at(day_b, 8))
    return {"a": day_a.isoformat(), "b": day_b.isoformat(), "today": today.isoformat()}


def test_the_tables_under_the_charts_hold_the_numbers_of_each_day(client, scene, audra):
    client.force_login(audra)
    response = client.get(OVERVIEW)
    assert response.status_code == 200
    tables = chart_tables(response)
    assert set(tables) == set(CHARTS)
    a, b, today = scene["a"], scene["b"], scene["today"]

    grants = tables["grants"]
    assert grants[a] == {"appdb-cluster": "2", "reports-cluster": "0"}
    assert grants[b] == {"appdb-cluster": "2", "reports-cluster": "1"}  # the rule's and break-glass; the 10-minute one
    assert grants[today] == {"appdb-cluster": "3", "reports-cluster": "0"}  # the three held ones
    assert grants["Total"] == {"appdb-cluster": "7", "reports-cluster": "1"}

    times = tables["decision-time"]
    assert times[a] == {"Median (p50)": "1 h", "95th percentile (p95)": "1 h 27 min", "Decided by a person": "2"}
    assert times[b] == {"Median (p50)": "35 min", "95th percentile (p95)": "57 min", "Decided by a person": "2"}
    assert times[today]["Decided by a person"] == "3"

    share = tables["auto-approval"]
    assert share[a] == {"Auto-approved share": "0%", "Auto-approved": "0", "Approved or denied": "2"}
    assert share[b] == {"Auto-approved share": "25%", "Auto-approved": "1", "Approved or denied": "4"}

    assert tables["break-glass"] == {
        b: {"Uses": "1", "Review still open": "1"},
        "Total": {"Uses": "1", "Review still open": "1"},
    }

    orphan, missing = DriftFinding.Kind.ORPHAN.label, DriftFinding.Kind.MISSING.label
    assert tables["drift"][a] == {missing: "0", orphan: "2"}
    assert tables["drift"][b] == {missing: "1", orphan: "0"}

    lag = tables["expiry-lag"]
    assert lag[a] == {
        "Median (p50)": "6 min",
        "95th percentile (p95)": "9 min",
        "Confirmed gone": "2",
        "Not yet confirmed": "—",
    }
    assert lag[b] == {
        "Median (p50)": "—",
        "95th percentile (p95)": "—",
        "Confirmed gone": "—",
        "Not yet confirmed": "1",
    }


def test_each_chart_is_an_svg_image_with_a_title_and_a_description_in_words(client, scene, audra):
    client.force_login(audra)
    page = client.get(OVERVIEW).content.decode()
    for slug in CHARTS:
        assert f'aria-labelledby="chart-{slug}-title chart-{slug}-desc"' in page
        assert f'<title id="chart-{slug}-title">' in page
    assert page.count('role="img"') == len(CHARTS)
    # The grants chart's description gives its totals and its busiest day (the first of two with 3).
    assert f"8 in all (appdb-cluster: 7; reports-cluster: 1); the most on {scene['b']} (3)." in page
    assert (
        "<script" not in page.split("<main>")[1].split("</main>")[0]
    )  # nothing to run: the page is drawn on the server


def test_the_overview_reads_a_bounded_number_of_queries(client, scene, audra, django_assert_max_num_queries):
    client.force_login(audra)
    client.get(OVERVIEW)  # the session and the user, cached
    # The session, the user, their permissions (2), the session saved, and seven for the six charts: none per row.
    with django_assert_max_num_queries(14):
        assert client.get(OVERVIEW, {"since": "2025-12-01", "until": "2026-12-01"}).status_code == 200


def test_a_period_without_anything_says_so_for_every_chart(client, scene, audra):
    client.force_login(audra)
    response = client.get(OVERVIEW, {"since": "2020-01-01", "until": "2020-01-31"})
    page = response.content.decode()
    assert response.status_code == 200
    assert "<svg" not in page and chart_tables(response) == {}
    for text in ("No grant was made in this period.", "No person decided a request in this period.",
                 "Nobody used break-glass in this period.", "The reconciler found nothing in this period.",
                 "No grant expired in this period."):  # fmt: skip
        assert text in page


def test_the_period_is_the_last_30_days_unless_chosen(client, scene, audra):
    client.force_login(audra)
    response = client.get(OVERVIEW)
    since = (timezone.localdate() - datetime.timedelta(days=29)).isoformat()
    assert f'value="{since}"' in response.content.decode()
    assert "the last 30 days unless you choose a period" in response.content.decode()
    # Day B alone: day A's grants and the three held today are outside.
    response = client.get(OVERVIEW, {"since": scene["b"], "until": scene["b"]})
    day_b = {"appdb-cluster": "2", "reports-cluster": "1"}
    assert chart_tables(response)["grants"] == {scene["b"]: day_b, "Total": day_b}


def test_days_are_the_portals_time_zone(client, ana, otto, profile, audra, settings):
    settings.TIME_ZONE = "Asia/Tokyo"  # UTC+9: 23:30 UTC is half past eight the next morning
    req = approved(ana, profile, otto).request
    utc = datetime.UTC
    AccessRequest.objects.filter(pk=req.pk).update(
        created_at=datetime.datetime(2026, 11, 20, 23, 0, tzinfo=utc),
        decided_at=datetime.datetime(2026, 11, 20, 23, 30, tzinfo=utc),
    )
    Grant.objects.filter(request_id=req.pk).update(created_at=datetime.datetime(2026, 11, 20, 23, 30, tzinfo=utc))
    client.force_login(audra)
    tables = chart_tables(client.get(OVERVIEW, {"since": "2026-11-20", "until": "2026-11-21"}))
    assert list(tables["grants"]) == ["2026-11-21", "Total"]
    assert tables["decision-time"]["2026-11-21"]["Median (p50)"] == "30 min"


@pytest.mark.parametrize(
    "params, error",
    [
        ({"since": "2026-01-10", "until": "2026-01-01"}, "The period ends before it starts."),
        ({"since": "2024-01-01", "until": "2025-01-01"}, "Choose at most 366 days."),
        ({"since": "yesterday"}, "From: Enter a valid date."),
    ],
)
def test_a_period_the_portal_cannot_use_shows_no_chart_and_says_why(client, db, audra, params, error):
    client.force_login(audra)
    response = client.get(OVERVIEW, params)
    page = response.content.decode()
    assert response.status_code == 200
    assert error in page and "Nothing is shown until the filters are fixed." in page
    assert "<svg" not in page


def test_a_year_is_allowed(db):
    form = OverviewPeriodForm({"since": "2024-01-01", "until": "2024-12-31"})  # 366 days: a leap year
    assert form.is_valid(), form.errors
    assert len(form.period()[2]) == 366


@pytest.mark.parametrize("persona", ["ana", "otto", "eve"])
def test_only_auditors_see_the_overview(client, scene, persona, request):
    client.force_login(request.getfixturevalue(persona))
    assert client.get(OVERVIEW).status_code == 403
    assert "Overview" not in client.get(reverse("audit:index")).content.decode()


def test_auditors_and_superusers_find_the_overview_on_the_reports_page(client, db, audra, root):
    for user in (audra, root):
        client.force_login(user)
        assert client.get(OVERVIEW).status_code == 200
        assert f'href="{OVERVIEW}"' in client.get(reverse("audit:index")).content.decode()


def test_signed_out_visitors_are_sent_to_sign_in(client, db):
    response = client.get(OVERVIEW)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_looking_at_the_overview_changes_nothing(client, scene, audra):
    client.force_login(audra)  # signing in is an event
    before = AuditEvent.objects.count()
    client.get(OVERVIEW)
    assert AuditEvent.objects.count() == before


# The drawing ------------------------------------------------------------------


def test_names_in_a_chart_are_escaped():
    days = [datetime.date(2026, 11, 30), datetime.date(2026, 12, 1)]
    chart = Chart("x", "A <b>title</b>", "About & more", "bars", days, [Series("<script>t</script>", [1, 2])])
    svg = str(chart.svg)
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "A &lt;b&gt;title&lt;/b&gt;" in svg
    assert "About &amp; more" in svg


def test_lines_break_where_a_day_has_no_value():
    days = [datetime.date(2026, 11, d) for d in (1, 2, 3, 4)]
    chart = Chart("x", "t", "d", "lines", days, [Series("s", [1.0, None, 3.0, 4.0])])
    path = str(chart.svg).split(' d="')[1].split('"')[0]
    assert path.count("M") == 2 and path.count("L") == 1  # one point, a gap, then a segment
    assert [row[0] for row in chart.table_rows] == ["2026-11-01", "2026-11-03", "2026-11-04"]


def test_the_axis_counts_in_round_steps():
    assert COUNT.ticks(7) == [0, 2, 4, 6, 8]
    assert COUNT.ticks(1) == [0, 1]
    assert COUNT.ticks(123_456)[-1] >= 123_456
    assert Axis(text=str, steps=(0.25,), top=1.0).ticks(0.3) == [0, 0.25, 0.5, 0.75, 1.0]


def test_a_chart_with_only_table_counts_says_it_has_nothing_to_draw():
    days = [datetime.date(2026, 11, 30)]
    chart = Chart("x", "t", "d", "lines", days, [Series("p50", [None])], extra=[Series("Not yet confirmed", [1])])
    assert not chart.empty
    assert chart.summary == "From 2026-11-30 to 2026-11-30: no value to draw; the table gives the counts."
    assert chart.table_rows == [["2026-11-30", "—", "1"]]
