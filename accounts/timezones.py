"""A person's time zone: the zone times are entered and shown in, stored in UTC either way.

It comes from the `tz` cookie: set by the page's script from the browser's
zone on a first visit, and by the server to the zone a person picks on the
request form (so it works without JavaScript). Without a valid cookie the
portal's TIME_ZONE applies.
"""

import functools
import zoneinfo

from django.conf import settings
from django.utils import timezone

COOKIE = "tz"
COOKIE_MAX_AGE = 365 * 24 * 3600


@functools.cache
def zone_names() -> list[str]:
    """Return the IANA zone names a person may choose, sorted."""
    return sorted(zoneinfo.available_timezones())


def zone_named(name: str) -> zoneinfo.ZoneInfo | None:
    """Return the zone called `name`, or None if there is no such zone (never raise on what a client sent)."""
    if name not in zone_names():  # also keeps paths such as "../../etc/x" away from the zoneinfo loader
        return None
    return zoneinfo.ZoneInfo(name)


def remember_zone(response, name: str) -> None:
    """Make `name` the person's zone for the next pages (not HttpOnly: the page's script reads it too)."""
    response.set_cookie(COOKIE, name, max_age=COOKIE_MAX_AGE, samesite="Lax", secure=settings.SESSION_COOKIE_SECURE)


class TimeZoneMiddleware:
    """Activate the person's zone (the `tz` cookie) for the request, else the portal's TIME_ZONE."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        zone = zone_named(request.COOKIES.get(COOKIE, ""))
        if zone is None:
            timezone.deactivate()
        else:
            timezone.activate(zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
