"""Notifications arrive where people chose, with the justification and the link, from real servers.

Mail goes through Django's SMTP backend to a real SMTP server on loopback
(aiosmtpd). Slack is a small HTTP server on loopback standing in for
Slack's Web API and an incoming webhook (Slack itself cannot run here); the
portal talks to it over HTTP exactly as it would to slack.com. Both servers
are in support.py, shared with the feature files' notification sections.
"""

import ast
import datetime
import hashlib
import hmac
import importlib
import json
import time
import urllib.parse

import pytest
from django.apps import apps
from django.utils import timezone
from django_q.models import Schedule

from accounts.models import NotificationPreference
from audit.models import AuditEvent
from grants import lifecycle, notify, tasks
from grants.models import AccessRequest, DriftFinding, Grant, Policy
from notifications import delivery, messages
from notifications import tasks as notifications

from .conftest import JUSTIFICATION
from .support import PORTAL, SIGNING_SECRET, free_port

# Every test here runs with the portal's address, no Slack and no security contacts, and tasks in this process.
pytestmark = pytest.mark.usefixtures("portal")


def submit(ana, profile, **kwargs):
    return lifecycle.submit_request(
        requester=ana,
        profile=profile,
        duration=datetime.timedelta(minutes=30),
        justification=JUSTIFICATION,
        ticket="INC-4711",
        **kwargs,
    )


def prefer(user, *, email, slack):
    NotificationPreference.objects.update_or_create(user=user, defaults={"email": email, "slack": slack})


def request_link(req):
    return f"{PORTAL}/access/requests/{req.pk}/"


# Email -------------------------------------------------------------------------------


def test_each_approver_of_the_current_step_gets_a_mail_of_their_own_with_the_justification_and_a_link_to_decide(
    smtp, run, ana, marc, otto, profile
):
    req = run(submit, ana, profile)
    # One mail each: nobody sees the other approvers' addresses.
    assert sorted((m.to, m.to_header) for m in smtp.mails) == [
        (["marc@example.com"], "marc@example.com"),
        (["otto@example.com"], "otto@example.com"),
    ]
    for mail in smtp.mails:
        assert mail.sender == "jitportal@example.test"
        assert mail.subject == "[jitportal] Approve? ana: appdb read-only for 30 min"
        assert JUSTIFICATION in mail.body and "Ticket: INC-4711" in mail.body
        assert f"Decide: {request_link(req)}" in mail.body


def test_an_approver_whose_address_is_malformed_stops_nobody_elses_mail(
    smtp, run, ana, marc, otto, profile, groups, django_user_model, caplog
):
    # An IdP's email claim with a line break, stored as it came: it cannot be a To header.
    mallory = django_user_model.objects.create_user(
        "mallory", "mallory@example.com\nBcc: everyone@example.com", "mallory-password-123"
    )
    mallory.groups.add(groups["db-approvers"])
    run(submit, ana, profile)
    assert sorted(m.to for m in smtp.mails) == [["marc@example.com"], ["otto@example.com"]]
    assert not Schedule.objects.filter(
        func="notifications.delivery.deliver"
    ).exists()  # no retry of what can never be sent
    assert any(
        "not an email address" in r.getMessage() and "mallory@example.com" in r.getMessage() for r in caplog.records
    )


def test_each_security_address_gets_its_own_mail_and_a_refused_one_alone_is_tried_again(
    smtp, run, settings, ana, otto, profile
):
    settings.SECURITY_EMAIL = ["security@example.com", "soc@example.com"]
    smtp.refuse = {"soc@example.com"}
    profile.policy = Policy.objects.create(
        name="glass", steps=[{"group": "db-approvers"}], break_glass_groups=["engineers"]
    )
    profile.save()
    run(submit, ana, profile, break_glass=True)
    (mail,) = smtp.to("security@example.com")
    assert mail.to_header == "security@example.com"
    message, attempt = ast.literal_eval(Schedule.objects.get(func="notifications.delivery.deliver").args)
    assert (message["to"], attempt) == (["soc@example.com"], 2)  # only the refused one is tried again


def test_only_the_approvers_of_the_step_the_request_waits_for_hear_of_it(
    smtp, run, ana, marc, otto, profile, groups, django_user_model
):
    security = groups["auditors"]
    sam = django_user_model.objects.create_user("sam", "sam@example.com", "sam-password-123")
    sam.groups.add(security)
    profile.policy = Policy.objects.create(name="two-steps", steps=[{"manager": True}, {"group": "auditors"}])
    profile.save()
    req = run(submit, ana, profile)
    assert [m.to for m in smtp.mails] == [["marc@example.com"]]  # step 1: ana's manager
    run(lifecycle.approve_request, req.pk, actor=marc)
    assert [m.to for m in smtp.mails] == [["marc@example.com"], ["sam@example.com"]]  # step 2: security
    assert "Step 2 of 2." in smtp.mails[1].body


def test_the_requester_hears_the_approval_the_access_being_ready_and_its_end(smtp, run, ana, otto, profile):
    req = run(submit, ana, profile)
    run(lifecycle.approve_request, req.pk, actor=otto, comment="go ahead")  # provisioning runs in the task too
    grant = Grant.objects.get(request=req)
    assert grant.status == Grant.Status.ACTIVE
    run(lifecycle.revoke_grant, grant.pk, actor=ana, reason="released")
    grant.refresh_from_db()
    assert grant.status == Grant.Status.REVOKED
    mails = smtp.to("ana@example.com")
    assert [m.subject for m in mails] == [
        "[jitportal] Request approved: appdb read-only for 30 min",
        f"[jitportal] Access ready: appdb read-only until {messages.when(grant.expires_at)}",
        "[jitportal] Access ended: appdb read-only",
    ]
    approved, ready, ended = (m.body for m in mails)
    assert (
        "Otto (otto) approved your request" in approved
        and "Comment: go ahead" in approved
        and request_link(req) in approved
    )
    assert f"{PORTAL}/access/" in ready
    assert "you released it" in ended and f"{PORTAL}/access/grants/{grant.pk}/" in ended
    assert all(JUSTIFICATION in m.body for m in mails)


def test_the_requester_hears_a_denial_with_its_comment(smtp, run, ana, otto, pending_request):
    run(lifecycle.deny_request, pending_request.pk, actor=otto, comment="use the replica")
    (mail,) = smtp.to("ana@example.com")
    assert mail.subject == "[jitportal] Request denied: appdb read-only for 30 min"
    assert "Otto (otto) denied your request" in mail.body and "Comment: use the replica" in mail.body
    assert JUSTIFICATION in mail.body


def test_an_auto_approval_names_the_rule(smtp, run, ana, profile):
    profile.policy = Policy.objects.create(
        name="self", steps=[{"group": "db-approvers"}], auto_approve=[{"name": "short", "max_duration": 3600}]
    )
    profile.save()
    run(submit, ana, profile)
    subjects = [m.subject for m in smtp.to("ana@example.com")]
    assert subjects[0] == "[jitportal] Request approved: appdb read-only for 30 min"
    assert (
        "The policy approved your request" in smtp.to("ana@example.com")[0].body
        and "(rule: short)" in smtp.to("ana@example.com")[0].body
    )
    assert not smtp.to("otto@example.com"), "nobody is asked to approve what the policy approved"


@pytest.fixture
def after_commit(django_capture_on_commit_callbacks):
    """Run what a request enqueued after commit, as the workers would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def test_the_security_contacts_hear_of_every_emergency_login_and_from_where(
    smtp, slack, settings, client, django_user_model, after_commit
):
    settings.DEMO_MODE = False
    settings.SECURITY_EMAIL = ["security@example.com"]
    django_user_model.objects.create_superuser("breakglass-admin", "ops@example.com", "a-long-emergency-passphrase")
    with after_commit():
        response = client.post(
            "/admin/login/?next=/admin/",
            {"username": "breakglass-admin", "password": "a-long-emergency-passphrase"},
            REMOTE_ADDR="203.0.113.7",
            HTTP_USER_AGENT="curl/8.5.0",
        )
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="user.emergency_login")
    (mail,) = smtp.to("security@example.com")
    assert mail.subject == "[jitportal] Emergency login: breakglass-admin signed in with a password"
    assert "from 203.0.113.7 (curl/8.5.0)" in mail.body and "/admin/login/" in mail.body
    assert f"{PORTAL}/admin/audit/auditevent/{event.pk}/change/" in mail.body
    (post,) = slack.sent("chat.postMessage", channel="C0SECURITY")
    assert "Emergency login: breakglass-admin" in post["text"]


def test_a_demo_mode_password_login_tells_nobody(smtp, slack, settings, client, django_user_model, after_commit):
    settings.SECURITY_EMAIL = ["security@example.com"]
    django_user_model.objects.create_user("ana", password="ana-demo-pass-123")
    with after_commit():
        client.post("/accounts/login/", {"login": "ana", "password": "ana-demo-pass-123"})
    assert client.get("/access/").status_code == 200
    assert smtp.mails == [] and slack.sent("chat.postMessage") == []


def test_the_ten_minute_reminder_is_sent_once_and_again_after_an_extension(smtp, run, active_grant):
    now = timezone.now()
    Grant.objects.filter(pk=active_grant.pk).update(expires_at=now + datetime.timedelta(minutes=25))
    assert run(tasks.remind_expiring, now) == []  # not yet
    Grant.objects.filter(pk=active_grant.pk).update(expires_at=now + datetime.timedelta(minutes=9, seconds=30))
    assert run(tasks.remind_expiring, now) == [active_grant.pk]
    assert run(tasks.remind_expiring, now) == []
    run(tasks.sweep)  # the minute sweeper runs it too
    reminders = [m for m in smtp.to("ana@example.com") if "ends in" in m.subject]
    assert len(reminders) == 1
    assert reminders[0].subject == "[jitportal] Access ends in 9 min: appdb read-only"
    assert f"Extend it on My access: {PORTAL}/access/" in reminders[0].body and JUSTIFICATION in reminders[0].body
    # Extended by an hour: reminded again ten minutes before the new end, once.
    later = now + datetime.timedelta(hours=1)
    Grant.objects.filter(pk=active_grant.pk).update(expires_at=later + datetime.timedelta(minutes=5))
    assert run(tasks.remind_expiring, later) == [active_grant.pk]
    assert run(tasks.remind_expiring, later) == []


# Preferences -----------------------------------------------------------------------------


def test_each_approver_is_told_the_way_they_chose(smtp, slack, run, ana, marc, otto, profile):
    prefer(marc, email=False, slack=True)
    prefer(otto, email=True, slack=False)
    req = run(submit, ana, profile)
    assert [m.to for m in smtp.mails] == [["otto@example.com"]]
    (dm,) = slack.sent("chat.postMessage")
    assert dm["channel"] == "U0MARC"
    assert JUSTIFICATION in dm["text"] and request_link(req) in dm["text"]
    buttons = {e["action_id"]: e for e in dm["blocks"][-1]["elements"]}
    assert buttons["approve"]["value"] == buttons["deny"]["value"] == f"{req.pk}:0"
    assert buttons["open"]["url"] == request_link(req)
    # The Slack id was found by email once, and is kept.
    assert slack.sent("users.lookupByEmail") == [{"email": "marc@example.com"}]
    assert NotificationPreference.objects.get(user=marc).slack_user_id == "U0MARC"


def test_a_requester_who_chose_slack_only_gets_no_mail(smtp, slack, run, ana, otto, pending_request):
    prefer(ana, email=False, slack=True)
    slack.calls.clear()
    run(lifecycle.deny_request, pending_request.pk, actor=otto, comment="no")
    assert not smtp.to("ana@example.com")
    (dm,) = slack.sent("chat.postMessage", channel="U0ANA")
    assert "denied" in dm["text"] and JUSTIFICATION in dm["text"] and "blocks" not in dm


def test_slack_markup_in_a_justification_is_shown_not_obeyed(slack, run, ana, marc, otto, profile):
    prefer(marc, email=False, slack=False)
    lifecycle.submit_request(
        requester=ana,
        profile=profile,
        duration=datetime.timedelta(minutes=30),
        justification="<!channel> look at <https://evil.example|the runbook> & fix",
    )
    run(notifications.approval_needed, AccessRequest.objects.get().pk)
    (dm,) = slack.sent("chat.postMessage", channel="U0OTTO")
    assert "&lt;!channel&gt; look at &lt;https://evil.example|the runbook&gt; &amp; fix" in dm["text"]


# The security channel on Slack -------------------------------------------------------------


def test_break_glass_and_drift_go_to_the_security_channel(slack, run, ana, profile, target):
    profile.policy = Policy.objects.create(
        name="glass", steps=[{"group": "db-approvers"}], break_glass_groups=["engineers"]
    )
    profile.save()
    run(submit, ana, profile, break_glass=True)
    finding = DriftFinding.objects.create(
        target=target, external_ref="jit_g999999", kind="orphan", action="removed from the target"
    )
    notifications.drift_found([finding])
    glass, drift = slack.sent("chat.postMessage", channel="C0SECURITY")
    assert "Break-glass: ana on appdb read-only" in glass["text"] and JUSTIFICATION in glass["text"]
    assert "jit_g999999" in drift["text"] and f"{PORTAL}/access/targets/" in drift["text"]


def test_with_only_a_webhook_security_news_and_approval_requests_go_to_its_channel(
    fake_slack, settings, run, ana, marc, otto, profile
):
    settings.SLACK_WEBHOOK_URL = fake_slack.url + "/webhook"
    req = run(submit, ana, profile)
    finding = DriftFinding.objects.create(
        target=profile.target, external_ref="jit_g999998", kind="orphan", action="removed from the target"
    )
    notifications.drift_found([finding])
    asking, drift = fake_slack.sent("webhook")
    assert request_link(req) in asking["text"] and JUSTIFICATION in asking["text"] and "blocks" not in asking
    assert "jit_g999998" in drift["text"]


# Retries ---------------------------------------------------------------------------------


def test_a_message_slack_refuses_for_a_while_is_tried_again_later(slack, run, ana, otto, pending_request):
    slack.fail_next = 1
    run(lifecycle.deny_request, pending_request.pk, actor=otto)
    assert not slack.sent("chat.postMessage")
    retry = Schedule.objects.get(func="notifications.delivery.deliver")
    assert retry.next_run > timezone.now() + datetime.timedelta(seconds=20)
    message, attempt = ast.literal_eval(retry.args)  # what the scheduler will pass
    assert attempt == 2
    assert delivery.deliver(message, attempt) == 1
    assert slack.sent("chat.postMessage", channel="U0ANA")


def test_mail_is_tried_again_when_the_smtp_server_is_down(settings, run, ana, otto, pending_request):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = (
        "127.0.0.1",
        free_port(),
        5,
    )  # nothing listens there
    run(lifecycle.deny_request, pending_request.pk, actor=otto)
    message, attempt = ast.literal_eval(Schedule.objects.get(func="notifications.delivery.deliver").args)
    assert (message["kind"], message["to"], attempt) == ("email", ["ana@example.com"], 2)


def test_a_retry_queued_under_the_old_name_and_message_shape_still_sends(slack, smtp, ana):
    # Scheduled before the notifications app: grants.notify.deliver with messages that do not say `via`.

    assert notify.deliver({"kind": "slack_dm", "user": ana.pk, "text": "hello"}, 2) == 1
    assert (
        notify.deliver({"kind": "email", "to": ["ana@example.com"], "subject": "[jitportal] hi", "body": "hi\n"}, 2)
        == 1
    )
    assert slack.sent("chat.postMessage", channel="U0ANA") and [m.to for m in smtp.mails] == [["ana@example.com"]]


def test_the_migration_moves_the_old_schedules_to_the_new_names_and_back(db):
    move = importlib.import_module("notifications.migrations.0001_notifications_schedules")
    for func in ("grants.notify.deliver", "grants.notify.approval_needed", "grants.tasks.sweep"):
        Schedule.objects.create(name=f"test {func}", func=func, schedule_type=Schedule.ONCE)
    mine = Schedule.objects.filter(name__startswith="test ")
    move.move_schedules(apps, None)
    assert sorted(mine.values_list("func", flat=True)) == [
        "grants.tasks.sweep",
        "notifications.delivery.deliver",
        "notifications.tasks.approval_needed",
    ]
    move.move_schedules_back(apps, None)
    assert sorted(mine.values_list("func", flat=True)) == [
        "grants.notify.approval_needed",
        "grants.notify.deliver",
        "grants.tasks.sweep",
    ]


def test_a_message_is_given_up_after_the_last_attempt(slack, ana):
    slack.fail_next = 1
    assert delivery.deliver({"kind": "slack_dm", "user": ana.pk, "text": "hello"}, len(delivery.RETRY_DELAYS) + 1) == 0
    assert not Schedule.objects.filter(func="notifications.delivery.deliver").exists()


# Approving from Slack -----------------------------------------------------------------------


def click(client, req, slack_user, action="approve", *, secret=SIGNING_SECRET, timestamp=None, step=0):
    payload = {
        "type": "block_actions",
        "user": {"id": slack_user, "username": "someone", "team_id": "T0TEAM"},
        "team": {"id": "T0TEAM"},
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "D0CHANNEL"},
        "channel": {"id": "D0CHANNEL"},
        "response_url": "https://hooks.slack.invalid/actions/1/2/3",
        "actions": [
            {"action_id": action, "block_id": f"decide-{req.pk}-{step}", "value": f"{req.pk}:{step}", "type": "button"}
        ],
    }
    body = urllib.parse.urlencode({"payload": json.dumps(payload)})
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return client.post(
        "/slack/interactions",
        body,
        content_type="application/x-www-form-urlencoded",
        headers={"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature},
    )


def test_an_approver_approves_from_the_slack_message_and_it_shows_the_outcome(
    client, slack, smtp, run, ana, otto, profile
):
    req = run(submit, ana, profile)
    (asked,) = slack.sent("chat.postMessage", channel="U0OTTO")
    value = next(e["value"] for e in asked["blocks"][-1]["elements"] if e["action_id"] == "approve")
    assert value == f"{req.pk}:0"
    response = run(click, client, req, "U0OTTO")
    assert response.status_code == 200
    req.refresh_from_db()
    assert (req.status, req.decided_by, req.decision_comment) == ("approved", otto, "via Slack")
    assert slack.sent("users.info") == [{"user": "U0OTTO"}]
    (update,) = slack.sent("chat.update")
    assert (update["channel"], update["ts"]) == ("D0CHANNEL", "1700000000.000100")
    assert update["blocks"][-1]["type"] == "context", "the buttons are gone"
    assert "Approved by Otto (otto): via Slack." in update["blocks"][-1]["elements"][0]["text"]
    assert Grant.objects.get(request=req).status == Grant.Status.ACTIVE
    assert AuditEvent.objects.get(action="request.approved").actor == otto
    assert smtp.to("ana@example.com")[0].subject == "[jitportal] Request approved: appdb read-only for 30 min"


def test_a_deny_button_denies(client, slack, ana, otto, pending_request):
    assert click(client, pending_request, "U0OTTO", "deny").status_code == 200
    pending_request.refresh_from_db()
    assert (pending_request.status, pending_request.decided_by) == ("denied", otto)
    assert "Denied by Otto (otto)" in slack.sent("chat.update")[0]["text"]


def test_a_requester_cannot_approve_their_own_request_from_slack(client, slack, ana, pending_request):
    assert click(client, pending_request, "U0ANA").status_code == 200
    pending_request.refresh_from_db()
    assert pending_request.status == "pending"
    (said,) = slack.sent("chat.postEphemeral")
    assert (said["user"], said["channel"]) == ("U0ANA", "D0CHANNEL")
    assert said["text"] == "Nothing was decided: You cannot decide your own request."
    assert not slack.sent("chat.update")
    assert AuditEvent.objects.get(action="request.decision_refused").actor == ana


def test_someone_who_is_not_an_approver_is_refused_in_slack(client, slack, eve, pending_request):
    click(client, pending_request, "U0EVE")
    pending_request.refresh_from_db()
    assert pending_request.status == "pending"
    assert (
        slack.sent("chat.postEphemeral")[0]["text"] == "Nothing was decided: You are not an approver for this request."
    )


def test_a_slack_user_without_a_portal_account_decides_nothing(client, slack, pending_request):
    slack.users["U0STRANGER"] = "stranger@example.com"
    click(client, pending_request, "U0STRANGER")
    pending_request.refresh_from_db()
    assert pending_request.status == "pending"
    assert "no active portal account has your Slack email" in slack.sent("chat.postEphemeral")[0]["text"]


def test_a_request_decided_meanwhile_updates_the_message_and_says_so(client, slack, ana, marc, otto, pending_request):
    lifecycle.deny_request(pending_request.pk, actor=marc, comment="no")
    click(client, pending_request, "U0OTTO")
    pending_request.refresh_from_db()
    assert pending_request.status == "denied"
    assert "cannot become approved" in slack.sent("chat.postEphemeral")[0]["text"]
    assert "Denied by Marc (marc): no." in slack.sent("chat.update")[0]["text"]


def test_a_bad_signature_is_refused(client, slack, otto, pending_request):
    response = click(client, pending_request, "U0OTTO", secret="not-the-signing-secret")
    assert response.status_code == 403
    pending_request.refresh_from_db()
    assert pending_request.status == "pending"
    assert slack.calls == []


def test_an_old_timestamp_is_refused_even_when_signed(client, slack, otto, pending_request):
    response = click(client, pending_request, "U0OTTO", timestamp=int(time.time()) - 6 * 60)
    assert response.status_code == 403
    assert b"too old" in response.content
    pending_request.refresh_from_db()
    assert pending_request.status == "pending"
    assert slack.calls == []


def test_the_endpoint_is_off_without_a_signing_secret(client, otto, pending_request):
    assert click(client, pending_request, "U0OTTO").status_code == 404
