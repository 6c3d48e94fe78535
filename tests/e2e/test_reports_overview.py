"""The Reports overview in the browser: an auditor opens it from the Reports page, sees its charts and their numbers.

A week of decisions is made in the portal's database first, through the
lifecycle (`manage.py shell`, as test_request_form.py adds its profile),
then moved to the days before today; the approvals are provisioned by the
running workers like any other. Screenshots go to test-artifacts/e2e/.
"""

import subprocess
import sys

import pytest
from playwright.sync_api import expect

from .harness import ROOT, screenshot
from .test_journey import nav

pytestmark = pytest.mark.e2e

REQUESTERS = 12
SEED = """
import datetime
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone
from grants import lifecycle, reconcile
from grants.models import AccessProfile, AccessRequest, DriftFinding, Grant

users = get_user_model().objects
profile = AccessProfile.objects.get(name="appdb-readonly")
approver, _ = users.get_or_create(username="chart-approver", defaults={"email": "chart-approver@example.com"})
approver.groups.add(Group.objects.get(name="db-approvers"))
today = timezone.localdate()
for n in range(%(requesters)d):
    user, _ = users.get_or_create(username=f"chart-user{n}", defaults={"email": f"chart-user{n}@example.com"})
    user.groups.add(Group.objects.get(name="engineers"))
    req = lifecycle.submit_request(
        requester=user, profile=profile, duration=datetime.timedelta(minutes=20),
        justification="Chart e2e: compare the order totals for the monthly report", ticket="",
    )
    day = today - datetime.timedelta(days=n %% 6 + 1)
    asked = timezone.make_aware(datetime.datetime.combine(day, datetime.time(9 + n %% 5)))
    answered = asked + datetime.timedelta(minutes=4 + 9 * n)
    if n %% 4 == 3:
        lifecycle.deny_request(req.pk, actor=approver, comment="Not for this report")
    else:
        lifecycle.approve_request(req.pk, actor=approver, comment="ok")
    AccessRequest.objects.filter(pk=req.pk).update(created_at=asked, decided_at=answered)
    Grant.objects.filter(request_id=req.pk).update(created_at=answered)
for n in range(3):
    finding = reconcile._finding(profile.target, f"jit_g9999{n}", "orphan", action="reported")
    DriftFinding.objects.filter(pk=finding.pk).update(found_at=timezone.now() - datetime.timedelta(days=n + 2))
"""


@pytest.fixture(scope="module")
def seeded(portal):
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SEED % {"requesters": REQUESTERS}],
        env=portal.env, cwd=ROOT, check=True, capture_output=True, timeout=180,
    )  # fmt: skip


def test_an_auditor_opens_the_overview_and_reads_a_chart_and_its_numbers(people, seeded):
    audra = people.page("audra")
    nav(audra, "Reports")
    audra.get_by_role("link", name="Overview").click()
    expect(audra.get_by_role("heading", level=1, name="Overview")).to_be_visible()
    for name in ("Grants per day, by target", "Time to a person's decision", "Auto-approval share", "Drift findings"):
        expect(audra.get_by_role("img", name=name)).to_be_visible()
    # Each chart draws a bar or a point per value, with the numbers in a table that opens below it.
    grants = audra.locator('table[data-chart="grants"]')
    expect(grants).to_be_hidden()
    audra.get_by_text("The numbers of grants per day, by target").click()
    expect(grants).to_be_visible()
    approved = REQUESTERS - REQUESTERS // 4
    total = int(grants.locator("tfoot td").first.inner_text().replace(",", ""))
    assert total >= approved  # the seeded approvals; earlier tests of the suite may have added their own
    assert audra.locator("svg.chart rect").count() >= 6  # a bar for each of the six days with grants
    screenshot(audra, "reports-overview")


def test_the_overview_shows_the_chosen_period_and_its_empty_charts(people, seeded):
    audra = people.page("audra")
    audra.get_by_label("From", exact=True).fill("2020-01-01")
    audra.get_by_label("To (inclusive)").fill("2020-01-31")
    audra.get_by_role("button", name="Apply filters").click()
    expect(audra.get_by_text("No grant was made in this period.")).to_be_visible()
    expect(audra.locator("svg.chart")).to_have_count(0)
    screenshot(audra, "reports-overview-empty")
