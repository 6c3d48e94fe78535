"""What each grant was used for, for auditors: a summary column in the access history, and a per-grant CSV."""

import csv
import io

import psycopg
import pytest
from django.db import connection
from django.urls import reverse

from audit.models import AuditEvent
from grants import lifecycle, selectors
from grants.models import Grant
from reports import columns

from .conftest import held
from .support import as_dicts, download, table_rows
from .test_report_downloads import _both_paths

ACCESS = reverse("audit:access")


@pytest.fixture
def used(ana, otto, profile):
    """Ana's grant, used on the target (two reads, a session left open) and then released."""
    grant = held(ana, profile, otto)
    creds = lifecycle.reveal_credentials(grant.pk, actor=ana)
    session = psycopg.connect(creds["dsn"], autocommit=True)
    for _ in range(2):
        session.execute("SELECT count(*) FROM public.orders")
    lifecycle.revoke_grant(grant.pk, actor=ana, reason="released")
    lifecycle.complete_revocation(grant.pk)
    session.close()
    return Grant.objects.get(pk=grant.pk)


def test_the_access_history_csv_ends_with_the_activity_summary(client, used, audra):
    client.force_login(audra)

    rows = as_dicts(download(client, ACCESS))

    assert download(client, ACCESS)[0][-1] == "activity"
    [row] = [r for r in rows if r["grant_id"] == str(used.pk)]
    assert row["activity"] == used.activity["summary"]
    assert row["activity"].endswith("1 open at revocation")


def test_a_grant_without_activity_has_an_empty_cell(client, ana, otto, profile, audra):
    live = held(ana, profile, otto)
    client.force_login(audra)

    [row] = [r for r in as_dicts(download(client, ACCESS)) if r["grant_id"] == str(live.pk)]

    assert row["activity"] == ""


@pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY is PostgreSQL's")
def test_copy_writes_the_activity_column_as_the_csv_module_does(used, ana, otto, profile):
    held(ana, profile, otto)  # and one without activity
    Grant.objects.filter(pk=used.pk).update(activity={**used.activity, "summary": '=1+2, "quoted"\nline'})

    written, copied = _both_paths(
        selectors.access_history_columns(selectors.access_history_base()), columns.ACCESS_HISTORY
    )

    assert copied == written and b'"\'=1+2, ""quoted""\nline"' in written


def test_the_access_history_page_shows_the_activity(client, used, audra):
    client.force_login(audra)
    [row] = [r for r in table_rows(client.get(ACCESS)) if r["Grant"] == f"#{used.pk}"]
    assert row["Activity"] == used.activity["summary"]


def test_an_auditor_downloads_a_grants_activity_row_by_row_and_the_download_is_audited(client, used, audra):
    client.force_login(audra)
    url = reverse("audit:grant_activity", args=[used.pk])

    response = client.get(url)

    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = as_dicts(list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode()))))
    assert [c.header for c in columns.GRANT_ACTIVITY] == list(rows[0])
    statements = [r for r in rows if r["kind"] == "statement"]
    assert ["2"] == [r["calls"] for r in statements if r["statement"] == "SELECT count(*) FROM public.orders"]
    assert {r["source_of_record"] for r in rows} == {"pg_stat_statements"}
    assert [r["kind"] for r in rows if r["kind"] != "statement"] == ["open at revocation", "totals"]
    event = AuditEvent.objects.filter(action="report.downloaded").latest("id")
    assert event.actor == audra and event.details["filters"] == {"grant": used.pk}


def test_only_auditors_download_a_grants_activity(client, used, ana, otto):
    url = reverse("audit:grant_activity", args=[used.pk])
    for person in (ana, otto):
        client.force_login(person)
        assert client.get(url).status_code == 403


def test_the_grant_page_links_auditors_to_the_download_and_nobody_else(client, used, ana, audra):
    link = reverse("audit:grant_activity", args=[used.pk])
    page = reverse("grants:grant_detail", args=[used.pk])
    client.force_login(audra)
    assert link in client.get(page).content.decode()
    client.force_login(ana)
    assert link not in client.get(page).content.decode()


def test_no_such_grant_is_not_found(client, audra):
    client.force_login(audra)
    assert client.get(reverse("audit:grant_activity", args=[987654])).status_code == 404
