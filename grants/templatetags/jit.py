from django import template

from grants.durations import human_duration

register = template.Library()


@register.filter
def duration(value):
    """Render a timedelta as '1 h 30 min'."""
    return human_duration(value) if value is not None else ""


@register.filter
def multiline(value):
    """Whether a credential spans lines (a private key, a credentials file) and needs a <pre>."""
    return "\n" in str(value)
