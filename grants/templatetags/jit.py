from django import template

from grants.durations import human_duration

register = template.Library()


@register.filter
def duration(value):
    """Render a timedelta as '1 h 30 min'."""
    return human_duration(value) if value is not None else ""


@register.filter
def scope(value):
    """Render what a request grants, e.g. 'roles: app_readonly, app_reports; owner_role: app_owner'."""
    if not value:
        return "the login only (nothing more)"
    parts = []
    for key, item in value.items():
        shown = ", ".join(str(v) for v in item) if isinstance(item, list | tuple) else str(item)
        parts.append(f"{key}: {shown}")
    return "; ".join(parts)


@register.filter
def multiline(value):
    """Whether a credential spans lines (a private key, a credentials file) and needs a <pre>."""
    return "\n" in str(value)
