"""Delegation, with on call, escalation and the self-approval refusal: one table of who may decide what.

The policy: step 1 whoever is on call for `primary` (otto today), escalating
after 30 min to sre (eve); step 2 a member of db-approvers (marc, otto).
"""

import datetime

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from accounts import tokens
from audit.models import AuditEvent
from grants import lifecycle, selectors
from grants.models import AccessProfile, Approval, OnCallSchedule, Policy, Target

from .conftest import JUSTIFICATION
from .test_oncall import at

START = at("2026-03-23T10:00")
HOUR = datetime.timedelta(hours=1)
# Every test here runs with the notification tests' settings: the portal's address, no Slack or security contacts
# unless a test sets them, and enqueued tasks run in this process (notifications/tests/support.py).
pytestmark = pytest.mark.usefixtures("portal")


@pytest.fixture
def world(db, groups, ana, otto, marc, eve, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(timezone, "now", lambda: START)
    OnCallSchedule.objects.create(
        name="primary",
        tz="Europe/Berlin",
        members=["otto", "marc"],
        shift_length=datetime.timedelta(days=1),
        starts_on=datetime.date(2026, 3, 23),
    )
    eve.groups.add(Group.objects.create(name="sre"))
    target = Target.objects.create(
        name="appdb",
        kind="postgres",
        config={"host": "127.0.0.1", "port": 5432, "dbname": "appdb"},
        secret_env="JIT_TEST_PG_DSN",
    )
    pol = Policy.objects.create(
        name="two-step",
        steps=[
            {"schedule": "primary", "escalate_after": 1800, "fallback": {"group": "sre"}},
            {"group": "db-approvers"},
        ],
    )
    profile = AccessProfile.objects.create(
        name="appdb-ro",
        title="appdb read-only",
        target=target,
        policy=pol,
        scope={"roles": ["app_readonly"]},
        max_duration=datetime.timedelta(hours=4),
    )
    profile.requestable_by.add(groups["engineers"])
    req = lifecycle.submit_request(
        requester=ana,
        profile=profile,
        duration=datetime.timedelta(minutes=30),
        justification=JUSTIFICATION,
        ticket="INC-4711",
    )
    return {"req": req, "ana": ana, "otto": otto, "marc": marc, "eve": eve, "monkeypatch": monkeypatch}


def delegate(w, who, to, *, start=START - HOUR, end=START + HOUR):
    lifecycle.delegate_approvals(actor=w[who], delegate=w[to], starts_at=start, ends_at=end, reason="out of office")


def approve(w, who):
    lifecycle.approve_request(w["req"].pk, actor=w[who])


def escalate(w):
    w["monkeypatch"].setattr(timezone, "now", lambda: START + datetime.timedelta(minutes=31))
    lifecycle.remind_and_escalate()


# Each row: what happens first, then who tries, and what they get (None: allowed; text: the refusal, in part).
ROWS = [
    ("the requester cannot approve, even on call", [], "ana", "your own request"),
    ("on call decides step 1", [], "otto", None),
    ("not on call: not an approver", [], "eve", "not an approver"),
    ("a delegate decides for the one on call", [lambda w: delegate(w, "otto", "eve")], "eve", None),
    (
        "a delegation not yet begun gives nothing",
        [lambda w: delegate(w, "otto", "eve", start=START + HOUR, end=START + 2 * HOUR)],
        "eve",
        "not an approver",
    ),
    (
        "a delegation ended early gives nothing",
        [
            lambda w: delegate(w, "otto", "eve"),
            lambda w: lifecycle.end_delegation(w["otto"].delegations_given.get().pk, actor=w["otto"]),
        ],
        "eve",
        "not an approver",
    ),
    ("never the delegate's own request", [lambda w: delegate(w, "otto", "ana")], "ana", "your own request"),
    ("the requester's delegation gives nothing", [lambda w: delegate(w, "ana", "eve")], "eve", "not an approver"),
    ("escalation lets the fallback decide", [escalate], "eve", None),
    (
        "after step 1 as a delegate, not step 2 oneself",
        [lambda w: delegate(w, "otto", "marc"), lambda w: approve(w, "marc")],
        "marc",
        "already approved a step",
    ),
    (
        "after the delegator's step 1, not step 2 for them",
        [lambda w: delegate(w, "otto", "eve"), lambda w: approve(w, "otto")],
        "eve",
        "otto has already approved a step",
    ),
    ("after step 1 by on call, another approves step 2", [lambda w: approve(w, "otto")], "marc", None),
    ("after the fallback's step 1, on call's step 2", [escalate, lambda w: approve(w, "eve")], "otto", None),
]


@pytest.mark.parametrize("first, actor, expected", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_who_may_decide(world, first, actor, expected):
    for step in first:
        step(world)
    before = Approval.objects.filter(request=world["req"]).count()
    if expected is None:
        lifecycle.approve_request(world["req"].pk, actor=world[actor])
        assert Approval.objects.filter(request=world["req"]).count() == before + 1
    else:
        with pytest.raises(lifecycle.NotAllowedError, match=expected):
            lifecycle.approve_request(world["req"].pk, actor=world[actor])
        assert Approval.objects.filter(request=world["req"]).count() == before


@pytest.mark.parametrize("first, actor, expected", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_the_inbox_and_the_message_recipients_agree_with_who_may_decide(world, first, actor, expected):
    for step in first:
        step(world)
    req = lifecycle.AccessRequest.objects.get(pk=world["req"].pk)
    user = world[actor]
    told = [u.username for u in selectors.deciders_of(req)]
    assert (user.username in told) is (expected is None)
    assert (req in selectors.requests_awaiting(user)) is (expected is None)
    assert told == sorted(told, key=lambda name: world[name].pk)  # one message each, in id order


def test_a_delegate_decision_is_recorded_on_behalf_of_through_the_page_and_the_api(world, client):
    delegate(world, "otto", "eve")
    req = world["req"]
    client.force_login(world["eve"])
    assert f"/access/requests/{req.pk}/" in client.get("/access/inbox/").content.decode()
    response = client.post(f"/access/requests/{req.pk}/decide", {"action": "approve", "step": 0, "comment": "for otto"})
    assert response.status_code == 302
    approval = Approval.objects.get(request=req)
    assert (approval.approver, approval.on_behalf_of) == (world["eve"], world["otto"])
    assert "Eve (eve) on behalf of Otto (otto)" in client.get(f"/access/requests/{req.pk}/").content.decode()
    event = AuditEvent.objects.get(action="request.step_approved", object_id=str(req.pk))
    assert event.actor == world["eve"] and event.details["on_behalf_of"] == "otto"
    # Step 2: eve is no db-approver, and otto's delegation may not give a second step.
    secret = tokens.create_token(actor=world["eve"], name="t", days=1)[1]
    answer = client.post(
        f"/api/v1/requests/{req.pk}/approve",
        data={},
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert answer.status_code == 403
    secret = tokens.create_token(actor=world["marc"], name="t", days=1)[1]
    body = client.post(
        f"/api/v1/requests/{req.pk}/approve",
        data={},
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}"},
    ).json()
    assert body["status"] == "approved"
    assert body["approvals"][0]["on_behalf_of"] == "otto" and body["approvals"][1]["on_behalf_of"] is None


def test_the_delegations_page_names_a_delegate_and_refuses_bad_input(world, client):
    client.force_login(world["otto"])
    bad = client.post(
        "/access/delegations/", {"delegate": "otto", "starts_at": "2026-03-23 09:00", "ends_at": "2026-03-24 09:00"}
    )
    assert bad.status_code == 200 and "You cannot delegate to yourself." in bad.content.decode()
    bad = client.post(
        "/access/delegations/", {"delegate": "nosuch", "starts_at": "2026-03-23 09:00", "ends_at": "2026-03-24 09:00"}
    )
    assert "Name an active portal user." in bad.content.decode()
    bad = client.post(
        "/access/delegations/", {"delegate": "eve", "starts_at": "2026-03-23 09:00", "ends_at": "2026-09-24 09:00"}
    )
    assert "at most 90 d" in bad.content.decode()
    ok = client.post(
        "/access/delegations/",
        {"delegate": "eve", "starts_at": "2026-03-23 09:00", "ends_at": "2026-03-24 09:00", "reason": "holiday"},
    )
    assert ok.status_code == 302
    assert AuditEvent.objects.filter(action="delegation.created", actor=world["otto"]).exists()
    delegation = world["otto"].delegations_given.get()
    client.force_login(world["eve"])
    assert "You decide for Otto (otto)" in client.get("/access/delegations/").content.decode()
    assert client.post(f"/access/delegations/{delegation.pk}/end").status_code == 404  # only otto ends it
    client.force_login(world["otto"])
    assert client.post(f"/access/delegations/{delegation.pk}/end").status_code == 302
    assert AuditEvent.objects.filter(action="delegation.ended").exists()


# Slack: the same rules, through a signed button click to the portal (Slack itself is a loopback stand-in).

from notifications.tests.support import fake_slack, slack  # noqa: E402, F401 (fixtures of the Slack stand-in)
from notifications.tests.test_notify import click  # noqa: E402 (with the Slack tests it serves)


def test_a_delegate_approves_from_slack_on_behalf_of_the_one_on_call_and_cannot_take_step_two(
    world,
    client,
    slack,  # noqa: F811 (pytest: the parameter is the imported fixture)
    django_capture_on_commit_callbacks,
):
    delegate(world, "otto", "eve")
    req = world["req"]
    with django_capture_on_commit_callbacks(execute=True):
        assert click(client, req, "U0EVE").status_code == 200
    approval = Approval.objects.get(request=req)
    assert (approval.approver, approval.on_behalf_of) == (world["eve"], world["otto"])
    with django_capture_on_commit_callbacks(execute=True):
        click(client, req, "U0EVE", step=1)
    assert Approval.objects.filter(request=req).count() == 1
    said = slack.sent("chat.postEphemeral")[-1]["text"]
    assert said.startswith("Nothing was decided:") and "approve" in said


def test_the_api_names_lists_and_ends_a_delegation(world, client):
    headers = {"Authorization": f"Bearer {tokens.create_token(actor=world['otto'], name='t', days=1)[1]}"}
    body = {
        "delegate": "eve",
        "starts_at": "2026-03-23T08:00:00+01:00",
        "ends_at": "2026-03-24T08:00:00+01:00",
        "reason": "away",
    }
    made = client.post("/api/v1/delegations", data=body, content_type="application/json", headers=headers)
    assert made.status_code == 201 and made.json()["delegate"] == "eve"
    refused = client.post(
        "/api/v1/delegations", data={**body, "delegate": "otto"}, content_type="application/json", headers=headers
    )
    assert refused.status_code == 400 and "You cannot delegate to yourself." in refused.content.decode()
    assert [d["delegate"] for d in client.get("/api/v1/delegations", headers=headers).json()] == ["eve"]
    ended = client.post(f"/api/v1/delegations/{made.json()['id']}/end", headers=headers)
    assert ended.status_code == 200 and client.get("/api/v1/delegations", headers=headers).json() == []


def test_on_call_members_fallback_approvers_and_delegates_see_the_decisions_report(
    world, client, bob, django_user_model
):
    # The Decisions report is open to whoever may decide (their own view): not only the groups named in steps.
    dora = django_user_model.objects.create_user("dora", "dora@example.com", "dora-password-123")
    OnCallSchedule.objects.filter(name="primary").update(members=["otto", "marc", "dora"])
    client.force_login(bob)
    assert client.get("/audit/decisions/").status_code == 403
    delegate({**world, "bob": bob}, "marc", "bob")
    for who in (dora, world["eve"], bob):  # on the rotation, the step's fallback group, marc's delegate
        client.force_login(who)
        assert client.get("/audit/decisions/").status_code == 200, who.username
    client.force_login(world["ana"])
    assert client.get("/audit/decisions/").status_code == 403
