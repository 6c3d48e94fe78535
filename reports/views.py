"""Report pages for auditors (everything), approvers (their decisions) and requesters (their own history).

Each page is a set of tables over one filter form; `?format=csv` (plus
`&table=<name>` where a page has several) downloads a table with the same
filters. Who sees what is `reports.scope.scope_for`, decided once per request.
"""

from __future__ import annotations

import dataclasses
import datetime

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpResponseBadRequest, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.functional import cached_property
from django_tables2 import RequestConfig

import grants.selectors as selectors
from audit.models import AuditEvent

from . import columns, downloads, filters, overview, tables
from .scope import ALL, AUDITOR_PERMISSION, DECIDED, OWN, may_see, scope_for

PER_PAGE = 50
# Summary tables (one row per profile or approver): sortable, so the top rows are the ones asked for.
SUMMARY_PER_PAGE = 25
# The most rows a page shows, whatever `?per_page=` asks.
MAX_PER_PAGE = 500
# The Decisions page without a period shows this many days, today included.
DEFAULT_DECISION_DAYS = 30


@dataclasses.dataclass
class Section:
    name: str  # the CSV report name, the `table` parameter and the table's URL prefix
    title: str
    table_class: type
    columns: tuple
    rows: object
    table: object = None
    csv_url: str = ""
    # The number of rows, or rows to count, for the paginator when `rows`
    # carries joins that do not change the count.
    count_rows: object = None
    per_page: int = PER_PAGE


class ReportPaginator(Paginator):
    """Pages of 1 to MAX_PER_PAGE rows, optionally told how many rows there are.

    django-tables2 takes the page size from `?per_page=`: a negative one was a
    server error, a huge one would read a whole trail into one page.
    `count_rows` is a number already known, or the same rows without the
    joins that only add columns.
    """

    def __init__(self, object_list, per_page, *, count_rows=None, **kwargs):
        super().__init__(object_list, min(max(int(per_page), 1), MAX_PER_PAGE), **kwargs)
        self.count_rows = count_rows

    @cached_property
    def count(self):
        if self.count_rows is None:
            return super().count
        return self.count_rows if isinstance(self.count_rows, int) else self.count_rows.count()


def _respond(request, *, template, scope, filtersets, sections, context=None, fixed=None, csv_default=None):
    """Stream the chosen section as CSV, or render the page with its filter form and paginated tables.

    `fixed`: filters the URL's path gives (the timeline's user), recorded with a download.
    `csv_default`: the section `?format=csv` gives without `&table=` (else the first).
    """
    invalid = any(fs.is_bound and not fs.is_valid() for fs in filtersets)
    applied = {}
    for fs in filtersets:
        applied.update(fs.applied())
    if request.GET.get("format") == "csv":
        name = request.GET.get("table") or csv_default or sections[0].name
        section = next((s for s in sections if s.name == name), None)
        if section is None:
            raise Http404(f"This page has no table {name!r}.")
        if invalid:
            return HttpResponseBadRequest(
                "Fix the filters first: " + "; ".join(_errors(filtersets)), content_type="text/plain"
            )
        return downloads.csv_response(
            request,
            report=section.name,
            columns=section.columns,
            rows=section.rows,
            filters={**(fixed or {}), **applied},
            scope=scope,
        )

    query = QueryDict(mutable=True)
    query.update(applied)
    many = len(sections) > 1
    for section in sections:
        section.table = section.table_class(
            section.rows, prefix=f"{section.name}-" if many else "", link_people=scope == ALL
        )
        paginate = {"per_page": section.per_page, "paginator_class": ReportPaginator}
        if section.count_rows is not None:
            paginate["count_rows"] = section.count_rows
        RequestConfig(request, paginate=paginate).configure(section.table)
        link = query.copy()
        link["format"] = "csv"
        if many and section.name != csv_default:
            link["table"] = section.name
        section.csv_url = "?" + link.urlencode()
    seen, fields = set(), []
    for fs in filtersets:
        for field in fs.form:
            if field.name not in seen:
                seen.add(field.name)
                fields.append(field)
    return render(
        request,
        template,
        {
            "scope": scope,
            "fields": fields,
            "errors": _errors(filtersets),
            "sections": sections,
            "filtered": bool(applied),
            **(context or {}),
        },
    )


def _errors(filtersets) -> list[str]:
    found = []
    for fs in filtersets:
        if fs.is_bound and not fs.is_valid():
            for name, messages in fs.form.errors.items():
                label = fs.form.fields[name].label if name in fs.form.fields else name
                found += [f"{label}: {m}" for m in messages if f"{label}: {m}" not in found]
    return found


@login_required
def index(request):
    user = request.user
    available = {name: may_see(user, name) for name in ("overview", "access", "current", "decisions", "break_glass")}
    return render(
        request,
        "reports/index.html",
        {"available": available, "auditor": user.has_perm(AUDITOR_PERMISSION)},
    )


@login_required
def overview_page(request):
    """Charts of a period (the last 30 days unless chosen), each with a table of its numbers; auditors only."""
    scope = scope_for(request.user, "overview")
    form = filters.OverviewPeriodForm(request.GET)
    charts = overview.charts(*form.period()) if form.is_valid() else []
    context = {
        "scope": scope,
        "fields": list(form),
        "errors": form.error_texts(),
        "filtered": bool(form.applied),
        "charts": charts,
        "period": form.cleaned_data if form.is_valid() else None,
        "default_days": None if form.applied else form.DEFAULT_DAYS,
    }
    return render(request, "reports/overview.html", context)


@login_required
def access_history(request):
    scope = scope_for(request.user, "access")
    rows = selectors.access_history_base(user=None if scope == ALL else request.user)
    fs = filters.AccessHistoryFilter(request.GET, rows, hide=("user",) if scope == OWN else ())
    sections = [
        Section(
            "access_history",
            "Access history",
            tables.AccessHistoryTable,
            columns.ACCESS_HISTORY,
            selectors.access_history_columns(fs.rows),
            count_rows=fs.rows,
        )
    ]
    return _respond(request, template="reports/access.html", scope=scope, filtersets=[fs], sections=sections)


@login_required
def current_access(request):
    scope = scope_for(request.user, "current")
    fs = filters.CurrentAccessFilter(request.GET, selectors.current_access())
    sections = [Section("current_access", "Current access", tables.CurrentAccessTable, columns.CURRENT_ACCESS, fs.rows)]
    return _respond(request, template="reports/current.html", scope=scope, filtersets=[fs], sections=sections)


@login_required
def decisions(request):
    scope = scope_for(request.user, "decisions")
    decider = request.user if scope == DECIDED else None
    params = request.GET
    if "since" not in params and "until" not in params:
        # Every decision ever made is rarely what is asked; an empty From
        # (submitted) shows all time.
        params = params.copy()
        params["since"] = (timezone.localdate() - datetime.timedelta(days=DEFAULT_DECISION_DAYS - 1)).isoformat()
    fs = filters.DecisionFilter(params, selectors.decisions(decider=decider), hide=("approver",) if decider else ())
    rows = fs.rows
    # One row per profile and per approver, read once: the page and its downloads show the same lists.
    per_profile, per_approver, count = selectors.decision_stats(
        rows, approver=decider, tally=None if decider else fs.tally()
    )
    sections = [
        Section(
            "decisions_by_profile",
            "Per profile",
            tables.ProfileStatsTable,
            columns.DECISIONS_BY_PROFILE,
            per_profile,
            per_page=SUMMARY_PER_PAGE,
        ),
        Section(
            "decisions_by_approver",
            "Per approver",
            tables.ApproverStatsTable,
            columns.DECISIONS_BY_APPROVER,
            per_approver,
            per_page=SUMMARY_PER_PAGE,
        ),
        Section("decisions", "Decisions", tables.DecisionTable, columns.DECISIONS, rows, count_rows=count),
    ]
    context = {"default_days": DEFAULT_DECISION_DAYS if params is not request.GET else None}
    if request.GET.get("format") != "csv":
        totals = selectors.decision_totals(per_profile)
        totals["avg_time_text"] = (
            tables.duration_text(totals["avg_time_to_decision"]) if totals["avg_time_to_decision"] else "—"
        )
        context["totals"] = totals
    return _respond(
        request,
        template="reports/decisions.html",
        scope=scope,
        filtersets=[fs],
        sections=sections,
        context=context,
        csv_default="decisions",
    )


@login_required
def break_glass(request):
    scope = scope_for(request.user, "break_glass")
    uses = filters.BreakGlassFilter(request.GET, selectors.break_glass_uses())
    drift = filters.DriftFilter(request.GET, selectors.drift_report())
    sections = [
        Section("break_glass", "Break-glass uses", tables.BreakGlassTable, columns.BREAK_GLASS, uses.rows),
        Section("drift", "Drift findings", tables.DriftTable, columns.DRIFT, drift.rows),
    ]
    return _respond(
        request, template="reports/break_glass.html", scope=scope, filtersets=[uses, drift], sections=sections
    )


@login_required
def grant_activity(request, pk):
    """Download what one grant's target kept of its use (statements, sessions) as CSV; auditors only."""
    scope = scope_for(request.user, "grant_activity")
    grant = selectors.grant_activity(pk)
    if grant is None:
        raise Http404
    return downloads.csv_response(
        request,
        report=f"grant_{grant.pk}_activity",
        columns=columns.GRANT_ACTIVITY,
        rows=selectors.grant_activity_rows(grant),
        filters={"grant": grant.pk},
        scope=scope,
    )


@login_required
def timeline(request, username):
    scope = scope_for(request.user, "timeline", subject=username)
    person = get_object_or_404(get_user_model(), username=username)
    fs = filters.TimelineFilter(request.GET, AuditEvent.objects.filter(actor=person).order_by("created_at", "id"))
    valid = not (fs.is_bound and not fs.is_valid())
    entries = selectors.user_timeline(person, **fs.timeline_filters()) if valid else []
    sections = [
        Section("timeline", "Requested, held and decided", tables.TimelineTable, columns.TIMELINE, entries),
        Section("timeline_events", "Audit events by this person", tables.EventTable, columns.TIMELINE_EVENTS, fs.rows),
    ]
    return _respond(
        request,
        template="reports/timeline.html",
        scope=scope,
        filtersets=[fs],
        sections=sections,
        context={"person": person},
        fixed={"user": person.username},
    )


@login_required
def timeline_lookup(request):
    """Go to the timeline of `?username=` (a plain GET form: works without JavaScript), or one's own."""
    username = (request.GET.get("username") or "").strip() or request.user.username
    if "/" in username:
        raise Http404("No such user.")
    return redirect("audit:timeline", username=username)
