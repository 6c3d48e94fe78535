"""On call: a step may name a schedule (a rotation in the catalog, or an iCalendar feed read over HTTP and cached).

Whoever the schedule has on call when the step opens may decide it; the
inbox, the API, the notification and the trail say who and why. The feed
is served by a real HTTP server on loopback.
"""

import datetime
import socket
import threading
import zoneinfo
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts import tokens
from audit.models import AuditEvent
from grants import catalog, lifecycle, oncall
from grants.models import AccessProfile, OnCallSchedule, Policy, StepAssignee, Target

from .support import submit

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=BERLIN)


@pytest.fixture
def rotation(db):
    """otto, then marc, a day each, handing over at 09:00 Berlin time from Monday 2026-03-23."""
    return OnCallSchedule.objects.create(
        name="primary",
        tz="Europe/Berlin",
        members=["otto", "marc"],
        handover="09:00",
        shift_length=datetime.timedelta(days=1),
        starts_on=datetime.date(2026, 3, 23),
    )


@pytest.fixture
def oncall_profile(db, groups, rotation):
    """Requestable by engineers; one step: whoever is on call for `primary`."""
    target = Target.objects.create(
        name="appdb",
        kind="postgres",
        config={"host": "127.0.0.1", "port": 5432, "dbname": "appdb"},
        secret_env="JIT_TEST_PG_DSN",
    )
    pol = Policy.objects.create(name="on-call", steps=[{"schedule": "primary", "count": 1}])
    profile = AccessProfile.objects.create(
        name="appdb-ro",
        title="appdb read-only",
        target=target,
        policy=pol,
        scope={"roles": ["app_readonly"]},
        max_duration=datetime.timedelta(hours=4),
    )
    profile.requestable_by.add(groups["engineers"])
    return profile


def on_call_now(when, monkeypatch):
    monkeypatch.setattr(timezone, "now", lambda: when)


# The rotation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "when, who",
    [
        ("2026-03-23T08:59", None),  # before the first shift
        ("2026-03-23T09:00", "otto"),
        ("2026-03-24T08:59", "otto"),
        ("2026-03-24T09:00", "marc"),
        ("2026-03-25T12:00", "otto"),
        # Daylight saving starts on 2026-03-29 at 02:00: the hand-over stays at 09:00 local time.
        ("2026-03-29T08:59", "marc"),
        ("2026-03-29T09:00", "otto"),
        ("2026-03-30T09:00", "marc"),
    ],
)
def test_the_rotation_hands_over_at_the_local_time_in_member_order(rotation, otto, marc, when, who):
    found = oncall.on_call(rotation, at=at(when))
    assert (found.user.username if found.user else None) == who
    if who:
        assert "in the rotation" in found.why and "Europe/Berlin" in found.why


def test_an_override_wins_over_the_rotation_and_says_so(rotation, otto, marc):
    rotation.overrides = [{"user": "marc", "start": "2026-03-23T12:00", "end": "2026-03-23T18:00"}]
    assert oncall.on_call(rotation, at=at("2026-03-23T13:00")).user == marc
    assert "by override" in oncall.on_call(rotation, at=at("2026-03-23T13:00")).why
    assert oncall.on_call(rotation, at=at("2026-03-23T18:00")).user == otto


def test_a_member_who_is_no_active_user_makes_nobody_on_call_with_the_reason(rotation, otto, marc):
    otto.is_active = False
    otto.save()
    found = oncall.on_call(rotation, at=at("2026-03-23T10:00"))
    assert found.user is None and "otto's, who is no active user" in found.why


# An iCalendar feed over HTTP -------------------------------------------------------------------

ICS = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//oncall//EN
BEGIN:VEVENT
UID:week-otto@test
DTSTART;TZID=Europe/Berlin:20260323T090000
DTEND;TZID=Europe/Berlin:20260324T090000
RRULE:FREQ=WEEKLY
SUMMARY:Primary on call
ATTENDEE:mailto:otto@example.com
END:VEVENT
BEGIN:VEVENT
UID:week-marc@test
DTSTART;TZID=Europe/Berlin:20260324T090000
DTEND;TZID=Europe/Berlin:20260325T090000
RRULE:FREQ=WEEKLY
SUMMARY:marc
END:VEVENT
END:VCALENDAR
"""


class Feed:
    def __init__(self):
        self.body, self.hits, self.status = ICS, 0, 200
        feed = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                feed.hits += 1
                body = feed.body.encode()
                self.send_response(feed.status)
                self.send_header("Content-Type", "text/calendar")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}/oncall.ics"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def feed():
    served = Feed()
    yield served
    served.server.shutdown()
    served.server.server_close()


def test_a_feed_names_the_attendee_or_the_summary_of_the_event_running_now_and_is_read_from_its_cache(
    feed, otto, marc, settings
):
    settings.JIT_ONCALL_FEED_TTL = 300
    schedule = OnCallSchedule.objects.create(name="cal", tz="Europe/Berlin", ics_url=feed.url)
    found = oncall.on_call(schedule, at=at("2026-03-30T10:00"))  # the weekly repeat
    assert found.user == otto and "“Primary on call”" in found.why
    assert oncall.on_call(schedule, at=at("2026-03-31T10:00")).user == marc
    assert feed.hits == 1  # the second answer came from the cache
    assert OnCallSchedule.objects.get(pk=schedule.pk).ics_text.startswith("BEGIN:VCALENDAR")


def test_a_feed_that_cannot_be_read_falls_back_to_its_last_copy_and_says_so(feed, otto, settings):
    settings.JIT_ONCALL_FEED_TTL = 0
    schedule = OnCallSchedule.objects.create(name="cal", tz="Europe/Berlin", ics_url=feed.url)
    assert oncall.on_call(schedule, at=at("2026-03-23T10:00")).user == otto
    feed.status = 500
    found = oncall.on_call(OnCallSchedule.objects.get(pk=schedule.pk), at=at("2026-03-23T10:00"))
    assert found.user == otto and "the feed could not be read" in found.why and "500" in found.why


def test_feeds_are_read_before_the_escalation_pass_takes_its_locks_and_never_under_them(feed, otto, settings):
    # An escalation pass locks the pending requests and the audit chain: a feed that takes 10 s to answer must
    # not hold them (and every approval waiting on them). It is read first; under the locks only the cache counts.
    settings.JIT_ONCALL_FEED_TTL = 0
    schedule = OnCallSchedule.objects.create(name="cal", tz="Europe/Berlin", ics_url=feed.url)
    lifecycle.remind_and_escalate(now=at("2026-03-23T10:00"))
    assert feed.hits == 1
    with oncall.cached_feeds_only():
        found = oncall.on_call(OnCallSchedule.objects.get(pk=schedule.pk), at=at("2026-03-23T10:00"))
    assert found.user == otto and feed.hits == 1


# Steps that name a schedule: lifecycle, pages, API, mail, trail ----------------------------------


def test_whoever_is_on_call_when_the_step_opens_may_decide_it_and_everyone_is_told_why(
    oncall_profile, ana, otto, marc, client, mailoutbox, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr("django_q.conf.Conf.SYNC", True)
    on_call_now(at("2026-03-23T10:00"), monkeypatch)
    with django_capture_on_commit_callbacks(execute=True):
        req = submit(ana, oncall_profile)
    asked = StepAssignee.objects.get(request=req)
    assert asked.user == otto and "on call for primary in the rotation" in asked.why
    event = AuditEvent.objects.get(action="request.on_call", object_id=str(req.pk))
    assert event.details["on_call"] == "otto" and "shift Mon 2026-03-23 09:00" in event.details["why"]
    mail = [m for m in mailoutbox if "otto@example.com" in m.to]
    assert len(mail) == 1 and f"Asked: {otto.label}, on call for primary in the rotation" in mail[0].body
    assert not [m for m in mailoutbox if "marc@example.com" in m.to]  # marc's shift is tomorrow

    client.force_login(otto)
    page = client.get("/access/inbox/").content.decode()
    assert f"#{req.pk}" in page or f"/access/requests/{req.pk}/" in page
    assert "On call" in page and "on call for primary in the rotation" in page
    secret = tokens.create_token(actor=otto, name="t", days=1)[1]
    body = client.get(f"/api/v1/requests/{req.pk}", headers={"Authorization": f"Bearer {secret}"}).json()
    assert body["on_call"] == [{"user": "otto", "schedule": "primary", "why": asked.why, "fallback": False}]

    # The next day marc is on call, but the step opened on otto's shift: it stays otto's.
    on_call_now(at("2026-03-24T10:00"), monkeypatch)
    with pytest.raises(lifecycle.NotAllowedError, match="not an approver"):
        lifecycle.approve_request(req.pk, actor=marc)
    lifecycle.approve_request(req.pk, actor=otto, comment="on call")
    req.refresh_from_db()
    assert req.status == "approved" and req.decided_by == otto


def test_a_requester_on_call_is_not_asked_to_decide_their_own_request_and_the_trail_says_so(
    oncall_profile, otto, marc, monkeypatch, groups
):
    otto.groups.add(groups["engineers"])
    on_call_now(at("2026-03-23T10:00"), monkeypatch)
    req = submit(otto, oncall_profile)
    assert not StepAssignee.objects.filter(request=req).exists()
    event = AuditEvent.objects.get(action="request.on_call", object_id=str(req.pk))
    assert event.details["on_call"] is None and "that is otto, who asked" in event.details["why"]
    with pytest.raises(lifecycle.NotAllowedError, match="your own request"):
        lifecycle.approve_request(req.pk, actor=otto)


# The catalog --------------------------------------------------------------------------------

CATALOG = """\
targets:
  appdb:
    kind: postgres
    config: {host: 127.0.0.1, port: 5432, dbname: appdb}
    secret_env: JIT_TEST_PG_DSN
schedules:
  primary:
    tz: Europe/Berlin
    rotation: {members: [otto, marc], handover: "09:00", length: 1d, start: 2026-03-23}
    overrides:
      - {user: marc, start: "2026-03-23T12:00", end: "2026-03-23T18:00"}
  cal:
    ics_url: %s
policies:
  on-call:
    steps:
      - schedule: primary
profiles:
  ro:
    title: appdb read-only
    target: appdb
    max_duration: 4h
    policy: on-call
"""


def test_catalog_plan_shows_who_is_on_call_now_for_each_schedule_and_apply_keeps_them(
    tmp_path, feed, otto, marc, monkeypatch, capsys
):
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG % feed.url)
    on_call_now(at("2026-03-23T10:00"), monkeypatch)
    call_command("catalog", "plan", str(path))
    out = capsys.readouterr().out
    assert "+ schedule primary: add" in out
    assert "profile ro: may approve: +(on call for primary)" in out
    assert "On call now:" in out
    assert "schedule primary: otto (on call for primary in the rotation" in out
    assert "schedule cal: otto (on call for cal by the calendar event “Primary on call”" in out
    catalog.apply(path)
    assert OnCallSchedule.objects.get(name="primary").overrides[0]["user"] == "marc"
    assert Policy.objects.get(name="on-call").steps == [
        {"group": None, "manager": False, "count": 1, "schedule": "primary"}
    ]
    on_call_now(at("2026-03-23T13:00"), monkeypatch)
    assert "schedule primary: marc (on call for primary by override" in catalog.plan(path).render()
    assert catalog.plan(path).empty


@pytest.mark.parametrize(
    "schedule, message",
    [
        (
            "    rotation: {members: [otto], handover: '9am', start: 2026-03-23}",
            "schedules.bad.rotation.handover: write a local time like 09:00",
        ),
        (
            "    tz: Mars/Olympus\n    rotation: {members: [otto], start: 2026-03-23}",
            "schedules.bad.tz: unknown time zone",
        ),
        (
            "    rotation: {members: [], start: 2026-03-23}",
            "schedules.bad.rotation.members: must be a list of usernames",
        ),
        ("    rotation: {members: [otto]}", "schedules.bad.rotation.start: write the first shift's date"),
        ("    ics_url: file:///etc/passwd", "schedules.bad.ics_url: write an http(s) URL"),
        (
            "    ics_url: http://x.test/a.ics\n    rotation: {members: [otto], start: 2026-03-23}",
            "schedules.bad: give either rotation",
        ),
        (
            "    rotation: {members: [otto], start: 2026-03-23}\n    overrides: [{user: otto, start: "
            "'2026-03-24T10:00', end: '2026-03-24T09:00'}]",
            "schedules.bad.overrides[1].end: must be after start",
        ),
    ],
)
def test_a_bad_schedule_is_an_error_naming_the_line_and_field(tmp_path, db, schedule, message):
    path = tmp_path / "catalog.yaml"
    path.write_text(f"schedules:\n  bad:\n{schedule}\npolicies:\n  p:\n    steps:\n      - schedule: nosuch\n")
    with pytest.raises(catalog.CatalogError) as caught:
        catalog.load(path)
    assert any(message in e for e in caught.value.errors), caught.value.errors
    assert any("policies.p.steps[1].schedule: no schedule 'nosuch'" in e for e in caught.value.errors)
