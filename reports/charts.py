"""Charts drawn on the server as inline SVG: stacked bars or lines over the days of a period.

No script and no library. A chart is an `<svg role="img">` with a `<title>`
and a `<desc>` (what it shows and its highlights, in words), one rectangle or
point per value, each with its own `<title>` (the browser's tooltip); the
template adds a legend and a table of the same numbers in a `<details>`.
Colours are the Okabe-Ito palette, told apart with the common colour-vision
deficiencies; the legend and the table carry the names, so colour is never
the only clue.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Callable

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from .tables import duration_text

PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#000000")
WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 14, 36
# At most this many day labels under the x axis (and grid lines over the y axis).
X_LABELS, Y_TICKS = 8, 5


@dataclasses.dataclass(frozen=True)
class Axis:
    """How a chart's values read: their text, the steps the y axis may count in, and a fixed top (shares: 1)."""

    text: Callable[[float], str]
    steps: tuple[float, ...]
    top: float | None = None

    def ticks(self, highest: float) -> list[float]:
        """Return the y axis' tick values, from 0 to a round value at or above `highest`."""
        if self.top is not None:
            highest = self.top
        step = next((s for s in self.steps if highest / s <= Y_TICKS), None)
        if step is None:  # beyond the steps: multiply the last by powers of ten
            step = self.steps[-1] * 10 ** math.ceil(math.log10(highest / (self.steps[-1] * Y_TICKS)))
        count = max(math.ceil(highest / step - 1e-9), 1)
        return [step * n for n in range(count + 1)]


COUNT = Axis(text=lambda v: f"{v:,.0f}", steps=(1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000))
SHARE = Axis(text=lambda v: f"{v:.0%}", steps=(0.25,), top=1.0)
_MIN, _HOUR, _DAY = 60, 3600, 86400


def _seconds_text(seconds: float) -> str:
    return duration_text(datetime.timedelta(seconds=seconds))


SECONDS = Axis(
    text=_seconds_text,
    steps=(
        1,
        5,
        10,
        15,
        30,
        _MIN,
        2 * _MIN,
        5 * _MIN,
        10 * _MIN,
        15 * _MIN,
        30 * _MIN,
        _HOUR,
        2 * _HOUR,
        3 * _HOUR,
        6 * _HOUR,
        12 * _HOUR,
        _DAY,
        2 * _DAY,
        7 * _DAY,
        14 * _DAY,
        28 * _DAY,
    ),
)


@dataclasses.dataclass
class Series:
    """One line or one layer of bars: a value per day of the chart (None: nothing that day)."""

    name: str
    values: list
    colour: str = ""
    # The text of a value in the table, if not the axis' (a count beside durations).
    text: Callable[[float], str] | None = None


@dataclasses.dataclass
class Chart:
    """A chart of `series` over `days`, drawn as stacked bars (`kind="bars"`) or lines; `extra` only in the table."""

    slug: str
    title: str
    description: str
    kind: str
    days: list[datetime.date]
    series: list[Series]
    axis: Axis = COUNT
    extra: list[Series] = dataclasses.field(default_factory=list)
    empty_text: str = "Nothing in this period."

    def __post_init__(self):
        if self.kind not in ("bars", "lines"):
            raise ValueError(f"unknown chart kind {self.kind!r}")
        for n, series in enumerate(self.series):
            series.colour = series.colour or PALETTE[n % len(PALETTE)]

    @property
    def empty(self) -> bool:
        return not self.table_rows

    def _has_value(self, value) -> bool:
        return value is not None and (self.kind == "lines" or value != 0)

    def _text(self, series: Series, value) -> str:
        if value is None:
            return "—"
        return (series.text or self.axis.text)(value)

    @property
    def table_header(self) -> list[str]:
        return ["Day", *(s.name for s in self.series), *(s.name for s in self.extra)]

    @property
    def table_rows(self) -> list[list[str]]:
        """Return a row per day with something to show: the day (ISO 8601), then each series' value as text."""
        columns = [*self.series, *self.extra]
        return [
            [day.isoformat(), *(self._text(s, s.values[i]) for s in columns)]
            for i, day in enumerate(self.days)
            if any(self._has_value(s.values[i]) for s in self.series) or any(s.values[i] for s in self.extra)
        ]

    @property
    def table_totals(self) -> list[str] | None:
        """Return the totals row of a bar chart (counts add up; lines' quantiles do not)."""
        if self.kind != "bars":
            return None
        columns = [*self.series, *self.extra]
        return ["Total", *(self._text(s, sum(v or 0 for v in s.values)) for s in columns)]

    @property
    def summary(self) -> str:
        """Return the highlights in words for the `<desc>`: totals and the busiest day, or each line's highest point."""
        if self.empty:
            return self.empty_text
        period = f"From {self.days[0].isoformat()} to {self.days[-1].isoformat()}"
        if self.kind == "bars":
            totals = [sum(s.values[i] or 0 for s in self.series) for i in range(len(self.days))]
            busiest = max(range(len(totals)), key=lambda i: totals[i])
            parts = [f"{s.name}: {self.axis.text(sum(v or 0 for v in s.values))}" for s in self.series]
            return (
                f"{period}: {self.axis.text(sum(totals))} in all ({'; '.join(parts)}); "
                f"the most on {self.days[busiest].isoformat()} ({self.axis.text(totals[busiest])})."
            )
        parts = []
        for s in self.series:
            points = [(v, i) for i, v in enumerate(s.values) if v is not None]
            if points:
                value, i = max(points)
                parts.append(f"{s.name} highest on {self.days[i].isoformat()} ({self.axis.text(value)})")
        if not parts:  # only the table's counts (grants past expiry, none confirmed gone yet)
            return f"{period}: no value to draw; the table gives the counts."
        return f"{period}: " + "; ".join(parts) + "."

    # Drawing ---------------------------------------------------------------

    def _highest(self) -> float:
        if self.kind == "bars":
            return max((sum(s.values[i] or 0 for s in self.series) for i in range(len(self.days))), default=0)
        return max((v for s in self.series for v in s.values if v is not None), default=0)

    @property
    def svg(self) -> SafeString:
        """Return the chart as inline SVG markup (every text escaped)."""
        ticks = self.axis.ticks(self._highest() or 1)
        top = ticks[-1]
        plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
        band = plot_w / max(len(self.days), 1)

        def y(value):
            return TOP + plot_h - plot_h * min(value, top) / top

        title_id, desc_id = f"chart-{self.slug}-title", f"chart-{self.slug}-desc"
        out = [
            f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{title_id} {desc_id}"'
            f' xmlns="http://www.w3.org/2000/svg">',
            f'<title id="{title_id}">{escape(self.title)}</title>',
            f'<desc id="{desc_id}">{escape(self.description)} {escape(self.summary)}</desc>',
            '<g class="axis" aria-hidden="true">',
        ]
        for tick in ticks:
            out.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>')
            out.append(
                f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{escape(self.axis.text(tick))}</text>'
            )
        every = max(math.ceil(len(self.days) / X_LABELS), 1)
        for i in range(0, len(self.days), every):
            day = self.days[i]
            x = LEFT + (i + 0.5) * band
            out.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle">{day:%b} {day.day}</text>')
        out.append("</g>")
        if self.kind == "bars":
            out += self._bars(y, band)
        else:
            out += self._lines(y, band)
        out.append("</svg>")
        # Every text above went through escape(); the numbers are ours.
        return mark_safe("".join(out))

    def _bars(self, y, band) -> list[str]:
        width = max(band * 0.7, 1)
        out = []
        for i, day in enumerate(self.days):
            below = 0
            for s in self.series:
                value = s.values[i] or 0
                if value <= 0:
                    continue
                x = LEFT + i * band + (band - width) / 2
                top, bottom = y(below + value), y(below)
                label = f"{day.isoformat()}: {s.name} {self.axis.text(value)}"
                out.append(
                    f'<rect x="{x:.1f}" y="{top:.1f}" width="{width:.1f}" height="{bottom - top:.1f}"'
                    f' fill="{s.colour}"><title>{escape(label)}</title></rect>'
                )
                below += value
        return out

    def _lines(self, y, band) -> list[str]:
        out = []
        for n, s in enumerate(self.series):
            # Every other line dashed: told apart without its colour too.
            dash = ' stroke-dasharray="6 4"' if n % 2 else ""
            path, gap = [], True
            points = []
            for i, value in enumerate(s.values):
                if value is None:
                    gap = True
                    continue
                x = LEFT + (i + 0.5) * band
                path.append(f"{'M' if gap else 'L'}{x:.1f} {y(value):.1f}")
                gap = False
                label = f"{self.days[i].isoformat()}: {s.name} {self.axis.text(value)}"
                points.append(
                    f'<circle cx="{x:.1f}" cy="{y(value):.1f}" r="3" fill="{s.colour}">'
                    f"<title>{escape(label)}</title></circle>"
                )
            if path:
                out.append(f'<path d="{" ".join(path)}" fill="none" stroke="{s.colour}" stroke-width="2"{dash}/>')
            out += points
        return out
