"""What the report tests share: the pages' URLs and helpers that read their tables and downloads."""

import csv
import io
import re
from html.parser import HTMLParser

from django.urls import reverse
from django.utils import timezone

ACCESS = reverse("audit:access")
CURRENT = reverse("audit:current")
DECISIONS = reverse("audit:decisions")
BREAK_GLASS = reverse("audit:break_glass")
INDEX = reverse("audit:index")
PAGES = [ACCESS, CURRENT, DECISIONS, BREAK_GLASS]
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


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
