"""Bundles: several profiles asked for at once ("Also request"), decided once, one grant per profile.

Lifecycle (with the race of two approvers on one bundle), pages and notifications. The API creates
no bundles: it asks for one profile per request.
"""

import datetime
import threading
import time

import psycopg
import pytest
from django.db import connection
from django.urls import reverse

from audit.models import AuditEvent
from grants import lifecycle
from grants.models import AccessProfile, AccessRequest, Grant

from .conftest import JUSTIFICATION
from .support import detail_url, form_data

H = datetime.timedelta(hours=1)
RS = AccessRequest.Status
NEW = reverse("grants:request_new")
INBOX = reverse("grants:inbox")


def text(response):
    return response.content.decode()


def decide_url(req):
    return reverse("grants:request_decide", args=[req.pk])


@pytest.fixture
def more_dbs(target, groups):
    """Two more read-only profiles approved by db-approvers, to bundle with `profile`."""
    made = []
    for n in (2, 3):
        p = AccessProfile.objects.create(
            name=f"appdb{n}-readonly",
            title=f"appdb{n} read-only",
            target=target,
            scope={"roles": ["app_readonly"]},
            max_duration=4 * H,
            approver_group=groups["db-approvers"],
        )
        p.requestable_by.add(groups["engineers"])
        made.append(p)
    return made


@pytest.fixture
def three_dbs(profile, more_dbs):
    """`profile` and the two of `more_dbs`: the three members of a bundle."""
    return [profile, *more_dbs]


# Lifecycle ----------------------------------------------------------------------------------------


def test_a_bundle_is_decided_once_and_gives_one_grant_per_profile(ana, otto, three_dbs):
    reqs = lifecycle.submit_bundle(requester=ana, profiles=three_dbs, duration=H, justification=JUSTIFICATION)
    assert len({r.bundle for r in reqs}) == 1
    lifecycle.approve_request(reqs[1].pk, actor=otto, comment="all three")
    assert set(AccessRequest.objects.values_list("status", flat=True)) == {"approved"}
    grants = [lifecycle.provision_grant(g.pk) for g in Grant.objects.filter(request__in=reqs)]
    assert sorted(g.profile.name for g in grants) == ["appdb-readonly", "appdb2-readonly", "appdb3-readonly"]
    assert {g.status for g in grants} == {"active"}


def test_denying_a_bundle_denies_all_of_it(ana, otto, three_dbs):
    reqs = lifecycle.submit_bundle(requester=ana, profiles=three_dbs, duration=H, justification=JUSTIFICATION)
    lifecycle.deny_request(reqs[0].pk, actor=otto)
    assert set(AccessRequest.objects.values_list("status", flat=True)) == {"denied"}


def test_a_bundle_with_a_bad_member_creates_nothing(ana, three_dbs):
    three_dbs[2].enabled = False
    three_dbs[2].save()
    with pytest.raises(lifecycle.InvalidRequestError):
        lifecycle.submit_bundle(requester=ana, profiles=three_dbs, duration=H, justification=JUSTIFICATION)
    assert not AccessRequest.objects.exists()


@pytest.mark.postgres_only("lines the deciders up behind a PostgreSQL row lock (FOR UPDATE) held from another session")
@pytest.mark.django_db(transaction=True)
def test_two_approvers_deciding_different_members_of_a_bundle_at_once_do_not_deadlock(ana, marc, otto, three_dbs):
    reqs = lifecycle.submit_bundle(requester=ana, profiles=three_dbs, duration=H, justification=JUSTIFICATION)
    first, middle, last = sorted(reqs, key=lambda r: r.pk)
    db = connection.settings_dict
    dsn = f"host={db['HOST']} port={db['PORT']} user={db['USER']} dbname={db['NAME']}"
    outcomes = []

    def decide(actor, req, approve):
        try:
            (lifecycle.approve_request if approve else lifecycle.deny_request)(req.pk, actor=actor)
            outcomes.append("approved" if approve else "denied")
        except lifecycle.TransitionError:
            outcomes.append("refused")  # the other approver decided the bundle first
        except Exception as exc:  # noqa: BLE001 (a deadlock is what this test looks for)
            outcomes.append(f"error: {exc}")
        finally:
            connection.close()

    # Hold the middle member, so that both deciders are inside their locking
    # before either can finish: marc approves the first member, otto denies the last.
    with psycopg.connect(dsn) as holder:
        holder.execute("SELECT 1 FROM grants_accessrequest WHERE id = %s FOR UPDATE", [middle.pk])
        threads = [threading.Thread(target=decide, args=args) for args in ((marc, first, True), (otto, last, False))]
        for t in threads:
            t.start()
        with psycopg.connect(dsn, autocommit=True) as watcher:
            for _ in range(600):
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchone()[0]
                if waiting >= 2:
                    break
                time.sleep(0.05)
        holder.rollback()
    for t in threads:
        t.join()
    assert sorted(outcomes) in (["approved", "refused"], ["denied", "refused"]), outcomes
    winner = next(o for o in outcomes if o != "refused")
    assert set(AccessRequest.objects.filter(bundle=first.bundle).values_list("status", flat=True)) == {winner}
    assert Grant.objects.filter(request__bundle=first.bundle).count() == (3 if winner == "approved" else 0)


# Pages: the request form's Also request -----------------------------------------------------------


def test_request_form_offers_a_labelled_start_and_also_request_but_no_break_glass_to_most(
    client, ana, profile, more_dbs
):
    client.force_login(ana)
    page = text(client.get(NEW))
    assert ">Start</label>" in page
    assert 'type="datetime-local"' in page
    assert "Leave empty to start as soon as approved; set it for a maintenance window (times in UTC)." in page
    assert "<legend>Also request</legend>" in page
    for p in more_dbs:
        assert f'type="checkbox" name="also" value="{p.pk}"' in page
        assert f"{p.title}</label>" in page
    assert "Break-glass" not in page
    assert ">Request access</button>" in page


def test_also_request_makes_a_bundle_and_the_message_names_every_request(client, ana, profile, more_dbs):
    client.force_login(ana)
    response = client.post(NEW, form_data(profile, also=[p.pk for p in more_dbs]), follow=True)
    reqs = list(AccessRequest.objects.order_by("pk"))
    assert [r.profile for r in reqs] == [profile, *more_dbs]
    assert len({r.bundle for r in reqs}) == 1 and reqs[0].bundle is not None
    assert {(r.duration, r.justification, r.ticket, r.status) for r in reqs} == {
        (datetime.timedelta(minutes=30), JUSTIFICATION, "INC-4711", RS.PENDING)
    }
    assert response.redirect_chain == [(detail_url(reqs[0]), 302)]
    page = text(response)
    assert f"Requests #{reqs[0].pk}, #{reqs[1].pk} and #{reqs[2].pk} sent to their approvers." in page
    assert "Part of a bundle with: appdb2 read-only" in page
    assert "appdb3 read-only" in page


def test_ticking_the_chosen_profile_again_makes_no_bundle(client, ana, profile, more_dbs):
    client.force_login(ana)
    client.post(NEW, form_data(profile, also=[profile.pk]))
    req = AccessRequest.objects.get()
    assert req.bundle is None


def test_a_bundle_with_a_profile_one_may_not_request_creates_nothing(client, ana, profile, more_dbs, target, groups):
    forbidden = AccessProfile.objects.create(
        name="audit-only", title="audit only", target=target, approver_group=groups["db-approvers"]
    )
    forbidden.requestable_by.add(groups["auditors"])
    client.force_login(ana)
    response = client.post(NEW, form_data(profile, also=[more_dbs[0].pk, forbidden.pk]))
    assert response.status_code == 200
    assert "You may not request audit only." in text(response)
    assert f'value="{forbidden.pk}"' not in text(response)  # never offered
    assert not AccessRequest.objects.exists()


def test_a_forged_bundle_member_is_audited(client, ana, profile, more_dbs, target, groups):
    forbidden = AccessProfile.objects.create(
        name="audit-only", title="audit only", target=target, approver_group=groups["db-approvers"]
    )
    forbidden.requestable_by.add(groups["auditors"])
    client.force_login(ana)
    client.post(NEW, form_data(profile, also=[more_dbs[0].pk, forbidden.pk]))
    assert AuditEvent.objects.filter(action="request.refused", actor=ana).exists()


# Pages: the inbox ---------------------------------------------------------------------------------


def test_bundle_is_shown_in_the_inbox_and_one_decision_approves_all_of_it(client, ana, otto, profile, more_dbs):
    reqs = lifecycle.submit_bundle(
        requester=ana, profiles=[profile, *more_dbs], duration=H, justification=JUSTIFICATION
    )
    client.force_login(otto)
    page = text(client.get(INBOX))
    assert (
        f'Part of a bundle with: appdb2 read-only (<a href="{detail_url(reqs[1])}">#{reqs[1].pk}</a>), '
        f'appdb3 read-only (<a href="{detail_url(reqs[2])}">#{reqs[2].pk}</a>). A decision on this request '
        "applies to all of them."
    ) in page
    assert "Approve or Deny decides the whole bundle (3 requests)." in page

    response = client.post(
        decide_url(reqs[0]), {"action": "approve", "comment": "all three", "step": "0", "next": "inbox"}, follow=True
    )
    assert set(AccessRequest.objects.values_list("status", flat=True)) == {RS.APPROVED}
    assert Grant.objects.count() == 3
    page = text(response)
    assert f"Request #{reqs[0].pk} approved. The decision applies to the other requests of its bundle too." in page
    assert "Nothing waits for your decision." in page


# Notifications ------------------------------------------------------------------------------------


def test_a_bundle_is_announced_once_and_its_decision_names_what_was_decided(
    portal, smtp, run, ana, marc, otto, profile, rw_profile
):
    first, second = run(
        lifecycle.submit_bundle,
        requester=ana,
        profiles=[profile, rw_profile],
        duration=datetime.timedelta(minutes=30),
        justification=JUSTIFICATION,
        ticket="INC-4711",
    )
    assert sorted((m.to, m.subject) for m in smtp.mails) == [
        (["marc@example.com"], "[jitportal] Approve? ana: appdb read-only and appdb read-write for 30 min"),
        (["otto@example.com"], "[jitportal] Approve? ana: appdb read-only and appdb read-write for 30 min"),
    ]
    run(lifecycle.approve_request, first.pk, actor=marc)  # ana's manager and a db approver: decides both
    (decided,) = [m for m in smtp.to("ana@example.com") if "approved" in m.subject]
    assert decided.subject == "[jitportal] Request approved: appdb read-only and appdb read-write for 30 min"
