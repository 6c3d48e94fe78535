"""A person's touching or overlapping grants of one profile are one span for every limit (issue 11, finding 2)."""

import datetime
import zoneinfo

import pytest
from django.utils import timezone

from grants import lifecycle
from grants.models import AccessRequest, Grant, Policy

from .conftest import JUSTIFICATION

H = datetime.timedelta(hours=1)
MIN = datetime.timedelta(minutes=1)
RS = AccessRequest.Status


def submit(user, profile, **kw):
    kw.setdefault("duration", H)
    req = lifecycle.submit_request(requester=user, profile=profile, justification=JUSTIFICATION, **kw)
    return AccessRequest.objects.get(pk=req.pk)


def rules(profile, *auto_approve):
    profile.policy = Policy.objects.create(
        name="spans", steps=[{"group": "db-approvers"}], auto_approve=list(auto_approve)
    )
    profile.save()
    return profile


@pytest.fixture
def day_after_tomorrow():
    return timezone.now().replace(microsecond=0) + datetime.timedelta(days=2)


# Auto-approval rules judge the span --------------------------------------------------


def test_back_to_back_windows_count_as_one_span_for_an_auto_approval_rule(ana, profile, day_after_tomorrow):
    rules(profile, {"name": "one-hour", "max_duration": 3600})
    first = submit(ana, profile, starts_at=day_after_tomorrow)
    assert (first.status, first.auto_rule) == (RS.APPROVED, "one-hour")
    second = submit(ana, profile, starts_at=day_after_tomorrow + H)
    assert second.status == RS.PENDING  # 2 h in a row; the rule approves 1 h
    assert Grant.objects.filter(user=ana).count() == 1


def test_a_window_a_second_after_another_still_touches_it_but_one_well_apart_does_not(
    ana, otto, profile, day_after_tomorrow
):
    rules(profile, {"name": "one-hour", "max_duration": 3600})
    submit(ana, profile, starts_at=day_after_tomorrow)
    close = submit(ana, profile, starts_at=day_after_tomorrow + H + datetime.timedelta(seconds=1))
    assert close.status == RS.PENDING
    lifecycle.deny_request(close.pk, actor=otto)
    apart = submit(ana, profile, starts_at=day_after_tomorrow + H + 16 * MIN)
    assert apart.status == RS.APPROVED


def test_an_extension_is_auto_approved_only_if_the_span_it_makes_is_within_the_rule(active_grant, ana, otto, profile):
    rules(profile, {"name": "one-hour", "max_duration": 3600})
    window = submit(ana, profile, starts_at=active_grant.expires_at + 10 * MIN, duration=30 * MIN)
    assert window.status == RS.PENDING  # 30 min + 10 min + 30 min in a row
    lifecycle.approve_request(window.pk, actor=otto)
    extension = lifecycle.request_extension(active_grant.pk, actor=ana, duration=5 * MIN, justification=JUSTIFICATION)
    assert AccessRequest.objects.get(pk=extension.pk).status == RS.PENDING
    assert Grant.objects.get(pk=active_grant.pk).expires_at == active_grant.expires_at


# The profile's maximum is for the span -----------------------------------------------


def test_touching_windows_cannot_chain_past_the_profile_maximum(ana, profile, day_after_tomorrow):
    rules(profile, {"name": "a-working-day", "max_duration": 8 * 3600})  # the profile allows 4 h
    assert submit(ana, profile, starts_at=day_after_tomorrow, duration=2 * H).status == RS.APPROVED
    assert submit(ana, profile, starts_at=day_after_tomorrow + 2 * H, duration=2 * H).status == RS.APPROVED
    with pytest.raises(lifecycle.InvalidRequestError) as exc:
        submit(ana, profile, starts_at=day_after_tomorrow + 4 * H, duration=H)
    assert "makes 5 h in a row" in exc.value.errors["duration"]
    assert "appdb read-only allows 4 h in all" in exc.value.errors["duration"]
    assert Grant.objects.filter(user=ana).count() == 2


# Overlaps are refused ------------------------------------------------------------------


def test_a_window_overlapping_a_live_grant_is_refused(active_grant, ana, profile):
    with pytest.raises(lifecycle.InvalidRequestError) as exc:
        submit(ana, profile, starts_at=timezone.now() + 10 * MIN)
    assert "This window overlaps your access to appdb read-only from" in exc.value.errors["starts_at"]
    assert f"(grant #{active_grant.pk})" in exc.value.errors["starts_at"]
    assert AccessRequest.objects.filter(requester=ana).count() == 1


def test_a_window_overlapping_another_scheduled_window_is_refused(ana, profile, day_after_tomorrow):
    rules(profile, {"name": "a-working-day", "max_duration": 8 * 3600})
    submit(ana, profile, starts_at=day_after_tomorrow, duration=2 * H)
    with pytest.raises(lifecycle.InvalidRequestError, match="This window overlaps your access"):
        submit(ana, profile, starts_at=day_after_tomorrow + H)


def test_access_now_that_would_run_into_a_scheduled_window_is_refused(ana, profile):
    rules(profile, {"name": "a-working-day", "max_duration": 8 * 3600})
    submit(ana, profile, starts_at=timezone.now() + 10 * MIN)
    with pytest.raises(lifecycle.InvalidRequestError, match="This request overlaps your access"):
        submit(ana, profile, duration=30 * MIN)


def test_approving_a_window_that_now_overlaps_the_requesters_access_is_refused_but_it_can_be_denied(
    active_grant, ana, otto, profile
):
    window = submit(ana, profile, starts_at=active_grant.expires_at + 30 * MIN)
    extension = lifecycle.request_extension(active_grant.pk, actor=ana, duration=45 * MIN, justification=JUSTIFICATION)
    lifecycle.approve_request(extension.pk, actor=otto)  # the grant now runs into the window
    with pytest.raises(lifecycle.TransitionError) as exc:
        lifecycle.approve_request(window.pk, actor=otto)
    assert f"Request #{window.pk} cannot be approved now: it overlaps ana's access to appdb read-only" in str(exc.value)
    window.refresh_from_db()
    assert window.status == RS.PENDING and not Grant.objects.filter(request=window).exists()
    lifecycle.deny_request(window.pk, actor=otto)
    window.refresh_from_db()
    assert window.status == RS.DENIED


def test_an_extension_running_into_a_later_window_is_refused(active_grant, ana, otto, profile):
    window = submit(ana, profile, starts_at=active_grant.expires_at + 10 * MIN)
    lifecycle.approve_request(window.pk, actor=otto)
    with pytest.raises(lifecycle.InvalidRequestError) as exc:
        lifecycle.request_extension(active_grant.pk, actor=ana, duration=20 * MIN, justification=JUSTIFICATION)
    assert "This extension overlaps your access to appdb read-only" in exc.value.errors["duration"]


# Business hours are judged against the window ------------------------------------------


def midday_zone() -> str:
    """Return an Etc/GMT zone where it is now between 12:00 and 13:00, so a 09:00-15:00 rule holds right now."""
    offset = 12 - timezone.now().astimezone(datetime.UTC).hour  # local = UTC + offset, within -11..+12
    # Etc/GMT names count the other way round: Etc/GMT-3 is UTC+3.
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


@pytest.fixture
def office_hours(profile):
    zone = midday_zone()
    rules(
        profile,
        {
            "name": "office",
            "max_duration": 4 * 3600,
            "business_hours": {"tz": zone, "days": [0, 1, 2, 3, 4, 5, 6], "start": "09:00", "end": "15:00"},
        },
    )
    return zone


def at(zone, days, hour):
    local = timezone.now().astimezone(zoneinfo.ZoneInfo(zone)) + datetime.timedelta(days=days)
    return local.replace(hour=hour, minute=0, second=0, microsecond=0)


def test_a_business_hours_rule_does_not_approve_a_window_at_night_asked_for_by_day(ana, profile, office_hours):
    night = submit(ana, profile, starts_at=at(office_hours, 3, 2))
    assert night.status == RS.PENDING


def test_a_business_hours_rule_approves_a_window_within_them(ana, profile, office_hours):
    morning = submit(ana, profile, starts_at=at(office_hours, 3, 10))
    assert (morning.status, morning.auto_rule) == (RS.APPROVED, "office")


def test_a_business_hours_rule_does_not_approve_access_that_runs_past_closing_time(ana, profile, office_hours):
    # It is 12:xx there; 3 h runs past 15:00.
    assert submit(ana, profile, duration=3 * H).status == RS.PENDING
