"""Routing: a profile's (or its target's) requests are announced in its channels; suggested reviewers are told first.

Channels: a Slack channel (the Slack stand-in of support.py), a mailing
list (Django's test mail outbox) and a Microsoft Teams incoming webhook. No
Teams service runs here: the Teams receiver is a local HTTP server that
checks the payload is an Adaptive Card message as Teams' Workflows webhook
takes it, with the link back to the portal.
"""

import datetime
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from accounts import tokens
from grants import catalog, lifecycle
from grants.models import AccessProfile, Target
from notifications import tasks as notifications
from notifications.channels.teams import card

from .conftest import JUSTIFICATION
from .support import PORTAL

# Every test here runs with the notification tests' settings: the portal's address, no Slack or security contacts
# unless a test sets them, and enqueued tasks run in this process (notifications/tests/support.py).
pytestmark = pytest.mark.usefixtures("portal")


class TeamsReceiver:
    """Stands in for a Teams Workflows webhook: accepts an Adaptive Card message, answers 202 like Teams."""

    def __init__(self):
        self.cards, self.status = [], 202
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                ok = (
                    self.headers["Content-Type"] == "application/json"
                    and body["type"] == "message"
                    and body["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
                    and body["attachments"][0]["content"]["type"] == "AdaptiveCard"
                )
                receiver.cards.append(body["attachments"][0]["content"] if ok else None)
                self.send_response(receiver.status if ok else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}/workflows/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def teams():
    receiver = TeamsReceiver()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def routed(db, groups, teams):
    # The receiver is on loopback over http; the catalog asks for https:// (a real Teams URL).
    target = Target.objects.create(
        name="appdb",
        kind="postgres",
        config={"host": "127.0.0.1", "port": 5432, "dbname": "appdb"},
        secret_env="JIT_TEST_PG_DSN",
        notify={"email": ["dba@example.com"], "slack": ["C0TARGET"]},
    )
    profile = AccessProfile.objects.create(
        name="appdb-ro",
        title="appdb read-only",
        target=target,
        approver_group=groups["db-approvers"],
        scope={"roles": ["app_readonly"]},
        max_duration=datetime.timedelta(hours=4),
        notify={"slack": ["C0DBTEAM"], "teams": [teams.url]},
    )
    profile.requestable_by.add(groups["engineers"])
    return profile


def submit(user, profile, **kwargs):
    return lifecycle.submit_request(
        requester=user,
        profile=profile,
        duration=datetime.timedelta(minutes=30),
        justification=JUSTIFICATION,
        ticket="INC-4711",
        **kwargs,
    )


@pytest.fixture
def run(django_capture_on_commit_callbacks):
    def run(func, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return func(*args, **kwargs)

    return run


def test_a_request_is_announced_in_the_profile_channels_and_the_target_mailing_list_with_a_link(
    routed,
    teams,
    slack,
    run,
    ana,
    otto,
    marc,
    mailoutbox,
):
    req = run(submit, ana, routed, reviewers=["otto"])
    link = f"{PORTAL}/access/requests/{req.pk}/"
    (posted,) = slack.sent("chat.postMessage", channel="C0DBTEAM")
    assert f"<{link}|Open in the portal>" in posted["text"] and "Suggested reviewers: otto." in posted["text"]
    assert not slack.sent("chat.postMessage", channel="C0TARGET")  # the profile's Slack channel replaces the target's
    (mail,) = [m for m in mailoutbox if m.to == ["dba@example.com"]]
    assert link in mail.body and mail.subject == "[jitportal] Approve? ana: appdb read-only for 30 min"
    (teams_card,) = teams.cards
    assert teams_card["body"][0]["text"] == "Approve? ana: appdb read-only for 30 min"
    assert JUSTIFICATION in teams_card["body"][1]["text"]
    assert teams_card["actions"] == [{"type": "Action.OpenUrl", "title": "Open in the portal", "url": link}]


@pytest.mark.parametrize("task, prefix", [("approval_reminder", "Reminder"), ("approval_escalated", "Escalated")])
def test_reminders_and_escalations_reach_the_profile_channels_too(routed, teams, run, ana, mailoutbox, task, prefix):
    req = run(submit, ana, routed)
    teams.cards.clear()
    mailoutbox.clear()
    run(getattr(notifications, task), req.pk)
    (teams_card,) = teams.cards
    assert teams_card["body"][0]["text"] == f"{prefix}: Approve? ana: appdb read-only for 30 min"
    (mail,) = [m for m in mailoutbox if m.to == ["dba@example.com"]]
    assert mail.subject == f"[jitportal] {prefix}: Approve? ana: appdb read-only for 30 min"


def test_suggested_reviewers_are_told_first_and_why(routed, run, ana, otto, marc, mailoutbox, settings):
    settings.SLACK_BOT_TOKEN = ""
    run(submit, ana, routed, reviewers=["otto"])
    people = [m for m in mailoutbox if m.to[0] in ("otto@example.com", "marc@example.com")]
    assert [m.to for m in people] == [["otto@example.com"], ["marc@example.com"]]
    assert people[0].body.startswith("ana suggested you as a reviewer.")
    assert "suggested" not in people[1].body


@pytest.mark.parametrize("who", ["eve", "ana", "nosuch"])
def test_a_suggested_reviewer_must_be_an_approver_of_the_request(routed, ana, eve, otto, who):
    with pytest.raises(lifecycle.InvalidRequestError, match=f"{who} is not an approver of appdb read-only"):
        submit(ana, routed, reviewers=["otto", who])
    assert not ana.access_requests.exists()


def test_reviewers_through_the_page_and_the_api(routed, client, ana, eve, otto):
    client.force_login(ana)
    form = {
        "profile": routed.pk,
        "duration": "30m",
        "justification": JUSTIFICATION,
        "ticket": "INC-4711",
        "reviewers": "eve",
    }
    page = client.post("/access/request/", form)
    assert page.status_code == 200 and "eve is not an approver of appdb read-only" in page.content.decode()
    secret = tokens.create_token(actor=ana, name="t", days=1)[1]
    body = {"profile": "appdb-ro", "duration_seconds": 1800, "justification": JUSTIFICATION, "reviewers": ["otto"]}
    answer = client.post(
        "/api/v1/requests", data=body, content_type="application/json", headers={"Authorization": f"Bearer {secret}"}
    )
    assert answer.status_code == 201 and answer.json()["reviewers"] == ["otto"]


def test_a_teams_webhook_that_refuses_is_not_retried_and_stops_nothing_else(
    routed, teams, run, ana, otto, mailoutbox, caplog
):
    teams.status = 404  # a deleted flow
    run(submit, ana, routed)
    assert "Giving up on a route notification after 1 attempt(s): Teams webhook answered 404" in caplog.text
    assert [m for m in mailoutbox if m.to == ["dba@example.com"]]


def test_the_card_is_what_teams_takes():
    message = card(title="T", body="B", link="https://jit.example.test/x")
    assert message["attachments"][0]["content"]["version"] == "1.4"


@pytest.mark.parametrize(
    "notify, message",
    [
        ("{teams: 'http://hooks.example/x'}", "profiles.ro.notify.teams: write the webhook's https:// URL"),
        ("{slack: general}", "profiles.ro.notify.slack: write the channel's id"),
        ("{email: [not-an-address]}", "profiles.ro.notify.email: 'not-an-address' is not an email address"),
        ("{pager: x}", "profiles.ro.notify.pager: unknown field"),
        ("[C0X]", "profiles.ro.notify: must be a mapping"),
    ],
)
def test_a_bad_route_is_an_error_naming_the_field(tmp_path, db, notify, message):
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "targets:\n  appdb:\n    kind: postgres\n    config: {host: 127.0.0.1, port: 5432, dbname: appdb}\n"
        "    secret_env: JIT_TEST_PG_DSN\nprofiles:\n  ro:\n    title: ro\n    target: appdb\n    max_duration: 1h\n"
        f"    approvers: {{group: db-approvers}}\n    notify: {notify}\n"
    )
    with pytest.raises(catalog.CatalogError) as caught:
        catalog.load(path)
    assert any(message in e for e in caught.value.errors), caught.value.errors


def test_routes_are_applied_from_the_catalog(tmp_path, db):
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "targets:\n  appdb:\n    kind: postgres\n    config: {host: 127.0.0.1, port: 5432, dbname: appdb}\n"
        "    secret_env: JIT_TEST_PG_DSN\n    notify: {email: dba@example.com}\nprofiles:\n  ro:\n    title: ro\n"
        "    target: appdb\n    max_duration: 1h\n    approvers: {group: db-approvers}\n"
        "    notify: {slack: C0DBTEAM, teams: 'https://prod.westeurope.logic.azure.com/workflows/x'}\n"
    )
    catalog.apply(path)

    profile = AccessProfile.objects.select_related("target").get(name="ro")
    assert profile.target.notify == {"email": ["dba@example.com"]}
    assert profile.notify == {"slack": ["C0DBTEAM"], "teams": ["https://prod.westeurope.logic.azure.com/workflows/x"]}
    assert catalog.plan(path).empty
