"""The Reports overview: which charts, from which reads (`grants.selectors`), over the days of a period."""

from __future__ import annotations

import datetime

import grants.selectors as selectors

from .charts import COUNT, SECONDS, SHARE, Chart, Series

_DRIFT_LABELS = dict(selectors.DRIFT_KINDS)


def _seconds(delta: datetime.timedelta | None) -> float | None:
    return None if delta is None else delta.total_seconds()


def _column(rows: list[dict], days: list[datetime.date], value, *, missing=None) -> list:
    """Return `value(row)` for each day (`missing` on days without a row)."""
    by_day = {row["day"]: row for row in rows}
    return [value(by_day[day]) if day in by_day else missing for day in days]


def _stacked(rows: list[dict], days: list[datetime.date], key: str, count: str, names=None) -> list[Series]:
    """Return a Series of `count` per distinct `key` of `rows` (sorted by key), zero on days without any."""
    index = {day: i for i, day in enumerate(days)}
    layers: dict[str, list] = {}
    for row in rows:
        layers.setdefault(row[key], [0] * len(days))[index[row["day"]]] += row[count]
    names = names or {}
    return [Series(names.get(k, k), layers[k]) for k in sorted(layers)]


def _quantile_series(rows: list[dict], days: list[datetime.date]) -> list[Series]:
    return [
        Series("Median (p50)", _column(rows, days, lambda r: _seconds(r["p50"]))),
        Series("95th percentile (p95)", _column(rows, days, lambda r: _seconds(r["p95"]))),
    ]


def charts(start: datetime.datetime, end: datetime.datetime, days: list[datetime.date]) -> list[Chart]:
    """Return the overview's charts of [start, end), whose days are `days`: one or two bounded queries each."""
    period = {"start": start, "end": end}
    decisions = selectors.decisions_per_day(**period)
    times = selectors.decision_times_per_day(**period)
    break_glass = selectors.break_glass_per_day(**period)
    lag, unconfirmed = selectors.expiry_lag_per_day(**period)
    return [
        Chart(
            "grants",
            "Grants per day, by target",
            "Grants made (on approval) per day, stacked by target.",
            "bars",
            days,
            _stacked(selectors.grants_per_day(**period), days, "target", "grants"),
            empty_text="No grant was made in this period.",
        ),
        Chart(
            "decision-time",
            "Time to a person's decision",
            "Median and 95th percentile of the time from request to a person's approval or denial, per day of "
            "decision. Policy rules and break-glass approve at once and are left out.",
            "lines",
            days,
            _quantile_series(times, days),
            axis=SECONDS,
            extra=[Series("Decided by a person", _column(times, days, lambda r: r["count"]), text=COUNT.text)],
            empty_text="No person decided a request in this period.",
        ),
        Chart(
            "auto-approval",
            "Auto-approval share",
            "Requests approved by a policy rule, out of those approved or denied, per day of decision.",
            "lines",
            days,
            [
                Series(
                    "Auto-approved share",
                    _column(decisions, days, lambda r: r["auto_approved"] / r["decided"] if r["decided"] else None),
                )
            ],
            axis=SHARE,
            extra=[
                Series("Auto-approved", _column(decisions, days, lambda r: r["auto_approved"]), text=COUNT.text),
                Series("Approved or denied", _column(decisions, days, lambda r: r["decided"]), text=COUNT.text),
            ],
            empty_text="No request was approved or denied in this period.",
        ),
        Chart(
            "break-glass",
            "Break-glass uses",
            "Break-glass requests per day of use; the table also counts those whose review is still open.",
            "bars",
            days,
            [Series("Uses", _column(break_glass, days, lambda r: r["uses"], missing=0), colour="#d55e00")],
            extra=[Series("Review still open", _column(break_glass, days, lambda r: r["open_reviews"], missing=0))],
            empty_text="Nobody used break-glass in this period.",
        ),
        Chart(
            "drift",
            "Drift findings",
            "The reconciler's findings per day, stacked by kind: accounts no grant explains (orphan), access that "
            "should have been gone (not revoked), and active access missing from its target.",
            "bars",
            days,
            _stacked(selectors.drift_per_day(**period), days, "kind", "findings", names=_DRIFT_LABELS),
            empty_text="The reconciler found nothing in this period.",
        ),
        Chart(
            "expiry-lag",
            "Expiry lag",
            "How long after its expiry a grant's access was confirmed gone on its target (verified_at minus "
            "expires_at): median and 95th percentile per day of expiry; the table also counts grants past their "
            "expiry not yet confirmed gone.",
            "lines",
            days,
            _quantile_series(lag, days),
            axis=SECONDS,
            extra=[
                Series("Confirmed gone", _column(lag, days, lambda r: r["count"]), text=COUNT.text),
                Series("Not yet confirmed", _column(unconfirmed, days, lambda r: r["unconfirmed"]), text=COUNT.text),
            ],
            empty_text="No grant expired in this period.",
        ),
    ]
