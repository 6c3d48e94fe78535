"""Report table rows rendered in one call per row instead of template code per cell."""

from django import template
from django.utils.html import conditional_escape, format_html_join
from django.utils.safestring import mark_safe

register = template.Library()


@register.simple_tag
def report_cells(row):
    """Return the `<td>`s of a django-tables2 row: each cell escaped unless safe, with its column's `td_class` if any.

    The same cells as django-tables2's template loop; on a 50-row page the
    template's per-cell work cost more than the rest of the request.
    """
    cells = []
    for column, value in row.items():
        css = getattr(column.column, "td_class", "")
        cells.append((f' class="{css}"' if css else "", conditional_escape(value)))
    return format_html_join("", "<td{}>{}</td>", ((mark_safe(css), value) for css, value in cells))
