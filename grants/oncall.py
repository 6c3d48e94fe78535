"""Who is on call now: a rotation from the catalog, its overrides, or an iCalendar feed read and cached.

Pure reads apart from the feed's cache: the lifecycle resolves a schedule
when a step opens and again when it escalates, and records who it found and
why.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime
import logging
import zoneinfo

import icalendar
import recurring_ical_events
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils import timezone

from .durations import human_duration
from .models import OnCallSchedule

log = logging.getLogger(__name__)

FEED_TIMEOUT = 10  # seconds; a feed that does not answer in time is read from the cache
FEED_LIMIT = 2_000_000  # bytes of a feed read at most
# Set while the caller holds locks: feeds are then read from the cache only, never over the network.
_CACHED_ONLY = contextvars.ContextVar("oncall_cached_only", default=False)


@contextlib.contextmanager
def cached_feeds_only():
    """Within: feed_text never goes to the network (the caller holds row or chain locks)."""
    token = _CACHED_ONLY.set(True)
    try:
        yield
    finally:
        _CACHED_ONLY.reset(token)


def refresh_feeds(*, now: datetime.datetime) -> None:
    """Read every stale iCalendar feed now, before a caller takes its locks and reads them from the cache."""
    for schedule in OnCallSchedule.objects.exclude(ics_url=""):
        feed_text(schedule, now=now)


@dataclasses.dataclass(frozen=True)
class OnCall:
    user: object | None  # the active user on call, or None
    why: str  # how the schedule came to name them (or why nobody)


def _local(value: datetime.datetime, tz: zoneinfo.ZoneInfo) -> str:
    return value.astimezone(tz).strftime("%a %Y-%m-%d %H:%M")


def _user_named(name: str):
    """Return the active user with this username or email, or None."""
    name = (name or "").strip().removeprefix("mailto:").removeprefix("MAILTO:")
    if not name:
        return None
    found = list(get_user_model().objects.filter(Q(username=name) | Q(email__iexact=name), is_active=True)[:2])
    return found[0] if len(found) == 1 else None


def parse_time(value: str, tz: zoneinfo.ZoneInfo) -> datetime.datetime:
    """Read an ISO time; one without an offset is local time in the schedule's zone."""
    moment = datetime.datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def rotation_shift(
    schedule: OnCallSchedule, at: datetime.datetime
) -> tuple[str, datetime.datetime, datetime.datetime] | None:
    """Return (member, shift start, shift end) of the rotation
    at `at`, or None if it has no members or has not begun."""
    if not schedule.members:
        return None
    tz = zoneinfo.ZoneInfo(schedule.tz)
    hour, minute = (int(part) for part in schedule.handover.split(":"))
    first_day = schedule.starts_on or datetime.date(2024, 1, 1)
    first = datetime.datetime.combine(first_day, datetime.time(hour, minute), tzinfo=tz)
    if at < first:
        return None
    # Count shifts in local wall time, so that a daily hand-over stays at 09:00 across daylight saving changes.
    local = at.astimezone(tz).replace(tzinfo=None)
    naive_first = first.replace(tzinfo=None)
    index = int((local - naive_first) / schedule.shift_length)
    start = (naive_first + index * schedule.shift_length).replace(tzinfo=tz)
    end = (naive_first + (index + 1) * schedule.shift_length).replace(tzinfo=tz)
    return schedule.members[index % len(schedule.members)], start, end


def on_call(schedule: OnCallSchedule, *, at: datetime.datetime | None = None) -> OnCall:
    """Return who `schedule` has on call at `at` (now), and why."""
    at = at or timezone.now()
    tz = zoneinfo.ZoneInfo(schedule.tz)
    label = f"on call for {schedule.name}"
    if schedule.ics_url:
        return _from_feed(schedule, at, tz, label)
    for override in schedule.overrides:
        start, end = parse_time(override["start"], tz), parse_time(override["end"], tz)
        if start <= at < end:
            user = _user_named(override["user"])
            span = f"{_local(start, tz)} to {_local(end, tz)} {schedule.tz}"
            if user is None:
                return OnCall(None, f"{label}: the override for {override['user']} ({span}) names no active user")
            return OnCall(user, f"{label} by override, {span}")
    shift = rotation_shift(schedule, at)
    if shift is None:
        return OnCall(None, f"{label}: the rotation has no members or has not begun")
    member, start, end = shift
    user = _user_named(member)
    span = f"{_local(start, tz)} to {_local(end, tz)} {schedule.tz}"
    if user is None:
        return OnCall(None, f"{label}: the rotation's shift {span} is {member}'s, who is no active user")
    return OnCall(user, f"{label} in the rotation ({human_duration(schedule.shift_length)} shifts), shift {span}")


# iCalendar feeds -----------------------------------------------------------------


def feed_text(schedule: OnCallSchedule, *, now: datetime.datetime) -> str:
    """Return the feed's text: the cache while it is fresh, else read again (the cache if that fails)."""
    ttl = datetime.timedelta(seconds=settings.JIT_ONCALL_FEED_TTL)
    if schedule.ics_fetched_at and now - schedule.ics_fetched_at < ttl and schedule.ics_text:
        return schedule.ics_text
    if _CACHED_ONLY.get():
        return schedule.ics_text
    try:
        with requests.get(schedule.ics_url, timeout=FEED_TIMEOUT, stream=True) as response:
            response.raise_for_status()
            body = response.raw.read(FEED_LIMIT + 1, decode_content=True)
        if len(body) > FEED_LIMIT:
            raise ValueError(f"the feed is larger than {FEED_LIMIT} bytes")
        text = body.decode("utf-8", errors="replace")
        icalendar.Calendar.from_ical(text)
    except (requests.RequestException, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
        log.warning("Could not read the on-call feed of %s: %s", schedule.name, error)
        OnCallSchedule.objects.filter(pk=schedule.pk).update(ics_error=error)
        schedule.ics_error = error
        return schedule.ics_text
    OnCallSchedule.objects.filter(pk=schedule.pk).update(ics_text=text, ics_fetched_at=now, ics_error="")
    schedule.ics_text, schedule.ics_fetched_at, schedule.ics_error = text, now, ""
    return text


def _event_people(event) -> list[str]:
    attendees = event.get("ATTENDEE") or []
    if not isinstance(attendees, list):
        attendees = [attendees]
    return [str(a) for a in attendees] + [str(event.get("SUMMARY", "")).strip()]


def _from_feed(schedule: OnCallSchedule, at: datetime.datetime, tz, label: str) -> OnCall:
    text = feed_text(schedule, now=timezone.now())
    stale = (
        f" (the feed could not be read: {schedule.ics_error}; using the copy of {_local(schedule.ics_fetched_at, tz)})"
        if schedule.ics_error and schedule.ics_fetched_at
        else ""
    )
    if not text:
        return OnCall(None, f"{label}: the feed has not been read yet ({schedule.ics_error or 'empty'})")
    try:
        events = recurring_ical_events.of(icalendar.Calendar.from_ical(text)).between(
            at, at + datetime.timedelta(seconds=1)
        )
    except ValueError as exc:
        return OnCall(None, f"{label}: the feed is not valid iCalendar ({exc})")
    events = sorted(events, key=lambda e: str(e.get("DTSTART").dt))
    for event in events:
        for name in _event_people(event):
            user = _user_named(name)
            if user is not None:
                start, end = event.get("DTSTART").dt, event.get("DTEND").dt if event.get("DTEND") else None
                span = f"{start:%Y-%m-%d %H:%M}" + (f" to {end:%Y-%m-%d %H:%M}" if end else "")
                return OnCall(user, f"{label} by the calendar event “{event.get('SUMMARY', '')}” ({span}){stale}")
    return OnCall(None, f"{label}: no event in the feed names an active user now{stale}")
