"""Access reviews (issue #14 part 1): campaigns, reviewers' decisions, removals the policy honours, the due date."""

import csv
import datetime
import io

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from grants import catalog, lifecycle, policy, reviews, selectors
from grants.models import (
    AccessProfile,
    AccessRequest,
    AccessReview,
    AccessReviewItem,
    EligibilityRemoval,
    Grant,
    ReviewSchedule,
)

from .support import DAY, item, open_campaign, submit

Role, Decision = AccessReviewItem.Role, AccessReviewItem.Decision


# Opening -------------------------------------------------------------------------------------------------------


def test_a_campaign_lists_every_requester_and_approver_of_its_profiles_with_their_use(
    auditor, active_grant, profile, ana, bob, marc, otto
):
    later = timezone.now() + datetime.timedelta(minutes=20)  # ana has used her 30 minutes for 20 by then
    review = reviews.open_review(actor=auditor, profiles=[profile], due_at=later + 14 * DAY, now=later)
    listed = {(i.person.username, i.role) for i in review.items.select_related("person")}
    assert listed == {
        ("ana", "requester"),
        ("bob", "requester"),
        ("marc", "requester"),
        ("marc", "approver"),
        ("otto", "approver"),
    }
    anas = item(review, ana)
    assert (anas.grants, anas.last_used_at) == (1, active_grant.starts_at)
    assert 0.3 <= anas.hours <= 0.34
    assert anas.via == "groups: engineers"
    assert item(review, otto, Role.APPROVER).decisions == 1  # he approved ana's request
    assert item(review, bob).grants == 0
    event = AuditEvent.objects.get(action="access_review.opened")
    assert event.details["items"] == 5 and event.details["undecided"] == "keep"


def test_only_auditors_and_holders_of_the_permission_open_a_campaign(ana, profile):
    with pytest.raises(lifecycle.NotAllowedError, match="permission to open access reviews"):
        reviews.open_review(actor=ana, profiles=[profile], due_at=timezone.now() + DAY)
    assert not AccessReview.objects.exists()
    assert AuditEvent.objects.filter(action="access_review.open_refused", actor=ana).exists()


def test_auditors_get_the_permission_to_open_campaigns_from_their_group(groups, audra):
    from grants.apps import _ensure_auditor_group  # noqa: PLC0415 (the hook under test, run again as a migration would)

    _ensure_auditor_group()
    audra = type(audra).objects.get(pk=audra.pk)
    assert reviews.may_open(audra) is (Group.objects.get(name="auditors") in audra.groups.all())


@pytest.mark.parametrize(
    "change, field",
    [
        ({"profiles": []}, "profiles"),
        ({"due_at": "past"}, "due_at"),
        ({"undecided": "maybe"}, "undecided"),
        ({"period_days": 0}, "period_days"),
    ],
)
def test_a_campaign_with_bad_settings_is_refused_with_the_field_to_fix(auditor, profile, change, field):
    kwargs = {"actor": auditor, "profiles": [profile], "due_at": timezone.now() + DAY, **change}
    if kwargs["due_at"] == "past":
        kwargs["due_at"] = timezone.now() - DAY
    with pytest.raises(lifecycle.InvalidRequestError) as raised:
        reviews.open_review(**kwargs)
    assert set(raised.value.errors) == {field}


# Who decides ---------------------------------------------------------------------------------------------------


def test_an_approver_of_the_profile_decides_a_requester_with_a_comment_and_it_is_an_audit_event(
    auditor, profile, ana, otto
):
    review = open_campaign(auditor, profile)
    decided = reviews.decide_item(item(review, ana).pk, actor=otto, decision="keep", comment="Still on call for it")
    assert (decided.decision, decided.decided_by, decided.by_rule) == ("keep", otto, False)
    event = AuditEvent.objects.get(action="access_review.decided")
    assert event.actor == otto
    assert event.details["person"] == "ana" and event.details["comment"] == "Still on call for it"


def test_nobody_reviews_their_own_eligibility(auditor, profile, marc):
    review = open_campaign(auditor, profile)
    with pytest.raises(lifecycle.NotAllowedError, match="your own eligibility"):
        reviews.decide_item(item(review, marc).pk, actor=marc, decision="keep", comment="I need it, trust me")
    assert item(review, marc).decision == ""
    assert AuditEvent.objects.filter(action="access_review.decide_refused", actor=marc).exists()


@pytest.mark.parametrize("who", ["bob", "audra", "eve"])
def test_people_who_are_not_reviewers_of_the_profile_may_not_decide(auditor, profile, ana, bob, eve, who):
    review = open_campaign(auditor, profile)
    actor = {"bob": bob, "audra": auditor, "eve": eve}[who]
    with pytest.raises(lifecycle.NotAllowedError, match="not a reviewer"):
        reviews.decide_item(item(review, ana).pk, actor=actor, decision="remove", comment="looks unused")
    assert not EligibilityRemoval.objects.exists()


def test_reviewers_named_in_the_catalog_decide_instead_of_the_approvers(auditor, profile, ana, bob, otto):
    profile.review_reviewers = ["bob"]
    profile.save(update_fields=["review_reviewers"])
    review = open_campaign(auditor, profile)
    with pytest.raises(lifecycle.NotAllowedError):
        reviews.decide_item(item(review, ana).pk, actor=otto, decision="keep", comment="fine by me")
    reviews.decide_item(item(review, ana).pk, actor=bob, decision="keep", comment="fine by me")


def test_when_the_only_reviewer_is_the_person_it_falls_to_another_approver_then_to_an_admin(
    auditor, target, groups, bob, otto, marc, admin_user
):
    solo = Group.objects.create(name="solo-approvers")
    otto.groups.add(solo)
    lonely = AccessProfile.objects.create(name="lonely", title="lonely", target=target, approver_group=solo)
    lonely.review_reviewers = ["otto"]
    lonely.save(update_fields=["review_reviewers"])
    review = open_campaign(auditor, lonely)
    ottos = item(review, otto, Role.APPROVER)
    assert reviews.item_reviewers(ottos) == [admin_user]  # otto is its only reviewer and its only approver
    bobs = item(review, bob)
    assert reviews.item_reviewers(bobs) == [otto]
    reviews.decide_item(ottos.pk, actor=admin_user, decision="keep", comment="Owner of the database")


def test_a_decided_item_is_not_decided_again_and_a_short_comment_is_refused(auditor, profile, ana, bob, otto, marc):
    review = open_campaign(auditor, profile)
    with pytest.raises(lifecycle.InvalidRequestError) as raised:
        reviews.decide_item(item(review, bob).pk, actor=otto, decision="keep", comment="ok")
    assert set(raised.value.errors) == {"comment"}
    with pytest.raises(lifecycle.InvalidRequestError):
        reviews.decide_item(item(review, bob).pk, actor=otto, decision="drop", comment="not a decision")
    reviews.decide_item(item(review, bob).pk, actor=otto, decision="keep", comment="Still deploys")
    # The same decision again is refused; a change is the other one (test_review_changes.py).
    with pytest.raises(lifecycle.TransitionError, match="already decided"):
        reviews.decide_item(item(review, bob).pk, actor=marc, decision="keep", comment="agree with otto")


# What a removal does -------------------------------------------------------------------------------------------


def test_removing_a_requester_ends_her_live_grant_with_reason_policy_and_refuses_new_requests(
    auditor, active_grant, profile, ana, otto
):
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="remove", comment="Left the on-call rota")
    grant = Grant.objects.get(pk=active_grant.pk)
    assert (grant.status, grant.end_reason) == ("revoking", "policy")
    assert not policy.may_request(ana, profile)
    assert profile not in selectors.requestable_profiles(ana)
    with pytest.raises(lifecycle.NotAllowedError):
        submit(ana, profile)
    removal = EligibilityRemoval.objects.get(person=ana, profile=profile, role="requester")
    assert AuditEvent.objects.filter(action="eligibility.removed", object_id=str(removal.pk)).exists()


def test_removing_a_requester_cancels_her_pending_request_saying_why(auditor, pending_request, profile, ana, otto):
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="remove", comment="No longer needs it")
    pending_request.refresh_from_db()
    assert pending_request.status == AccessRequest.Status.CANCELLED
    assert "access review removed ana" in pending_request.decision_comment


def test_a_removal_touches_only_the_profile_reviewed(auditor, profile, rw_profile, ana, otto):
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="remove", comment="Not her database")
    assert policy.may_request(ana, rw_profile)
    assert submit(ana, rw_profile).status == "pending"


def test_removing_an_approver_stops_him_deciding_the_profile_everywhere(auditor, pending_request, profile, marc, otto):
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, otto, Role.APPROVER).pk, actor=marc, decision="remove", comment="Moved teams")
    assert not policy.may_decide(otto, pending_request)
    assert otto not in selectors.deciders_of(pending_request)
    assert otto not in selectors.approvers_of(pending_request)
    assert pending_request not in selectors.requests_awaiting(otto)
    with pytest.raises(lifecycle.NotAllowedError):
        lifecycle.approve_request(pending_request.pk, actor=otto, comment="ok")
    assert lifecycle.approve_request(pending_request.pk, actor=marc, comment="ok").status == "approved"


def test_a_removal_shows_until_the_idp_takes_the_person_out_of_the_group(auditor, profile, groups, ana, otto):
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="remove", comment="Left the on-call rota")
    [(removal, behind)] = selectors.removals_behind_idp()
    assert (removal.person, behind) == (ana, ["engineers"])
    ana.groups.remove(groups["engineers"])
    assert selectors.removals_behind_idp() == []


def test_the_idp_group_managers_are_told_of_a_removal(auditor, profile, ana, otto, admin_user, mailoutbox, settings):
    from notifications import tasks  # noqa: PLC0415 (the edge's task, run here as the worker would)

    settings.JIT_IDP_GROUP_MANAGERS = []
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="remove", comment="Left the on-call rota")
    removal = EligibilityRemoval.objects.get()
    mailoutbox.clear()
    assert tasks.eligibility_removed(removal.pk) >= 1
    [mail] = [m for m in mailoutbox if m.to == [admin_user.email]]
    assert "remove ana from engineers in the IdP" in mail.subject


def test_a_person_already_removed_is_not_listed_again(auditor, profile, ana, otto):
    first = open_campaign(auditor, profile)
    reviews.decide_item(item(first, ana).pk, actor=otto, decision="remove", comment="Left the on-call rota")
    second = open_campaign(auditor, profile)
    assert not second.items.filter(person=ana, role=Role.REQUESTER).exists()


# The due date --------------------------------------------------------------------------------------------------


def test_at_the_due_date_undecided_items_follow_a_remove_rule_and_the_campaign_closes(
    auditor, profile, ana, bob, otto, admin_user
):
    review = open_campaign(auditor, profile, undecided="remove", due=2 * DAY)
    reviews.decide_item(item(review, bob).pk, actor=otto, decision="keep", comment="Still deploys")
    assert reviews.close_due_reviews(now=timezone.now() + DAY) == []  # not due yet
    assert reviews.close_due_reviews(now=timezone.now() + 3 * DAY) == [review.pk]
    review.refresh_from_db()
    assert review.closed_at is not None
    anas = item(review, ana)
    assert (anas.decision, anas.by_rule, anas.decided_by) == ("remove", True, None)
    assert item(review, bob).decision == "keep" and not item(review, bob).by_rule
    assert not policy.may_request(ana, profile) and policy.may_request(bob, profile)
    assert AuditEvent.objects.get(action="access_review.closed").details["applied"] == 4
    assert reviews.close_due_reviews(now=timezone.now() + 4 * DAY) == []
    # Both approvers were removed too: ana's item falls to the admin, who finds the campaign closed.
    assert reviews.item_reviewers(anas) == [admin_user]
    with pytest.raises(lifecycle.TransitionError, match="closed"):
        reviews.decide_item(anas.pk, actor=admin_user, decision="keep", comment="too late now")


def test_a_keep_rule_leaves_everyone_eligible(auditor, profile, ana):
    review = open_campaign(auditor, profile, undecided="keep", due=2 * DAY)
    reviews.close_due_reviews(now=timezone.now() + 3 * DAY)
    assert set(review.items.values_list("decision", flat=True)) == {"keep"}
    assert not EligibilityRemoval.objects.exists() and policy.may_request(ana, profile)


def test_reviewers_are_reminded_once_before_the_due_date(auditor, profile, ana):
    review = open_campaign(auditor, profile, due=10 * DAY)
    assert reviews.remind_reviewers(now=timezone.now() + DAY) == []
    assert reviews.remind_reviewers(now=timezone.now() + 8 * DAY) == [review.pk]
    assert reviews.remind_reviewers(now=timezone.now() + 9 * DAY) == []


def test_a_campaign_with_everything_decided_is_not_reminded(auditor, profile, ana, marc, otto):
    review = open_campaign(auditor, profile, due=10 * DAY)
    for each in review.items.all():
        reviewer = marc if each.person_id == otto.pk else otto
        reviews.decide_item(each.pk, actor=reviewer, decision="keep", comment="Still needed")
    assert reviews.remind_reviewers(now=timezone.now() + 8 * DAY) == []


def test_the_schedule_runs_reminders_and_the_due_date_rule(auditor, profile):
    from django_q.models import Schedule  # noqa: PLC0415 (the migration's schedule)

    from grants import tasks  # noqa: PLC0415 (the scheduled task's own name)

    review = open_campaign(auditor, profile, due=2 * DAY)
    assert tasks.run_access_reviews(now=timezone.now() + 3 * DAY) == {
        "opened": [],
        "reminded": [],
        "closed": [review.pk],
    }
    assert Schedule.objects.filter(name="jitportal: access reviews", func="grants.tasks.run_access_reviews").exists()


def test_progress_counts_decisions_per_profile_and_reviewer(auditor, profile, ana, otto):
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="keep", comment="Still on call for it")
    [per_profile], per_reviewer = selectors.review_progress(review)
    assert (per_profile.total, per_profile.decided) == (4, 1)  # ana, marc twice, otto
    ottos = next(p for p in per_reviewer if p.label == "otto")
    assert (ottos.total, ottos.decided) == (3, 1)  # every item but his own


# Pages ---------------------------------------------------------------------------------------------------------


def browser(client, user):
    client.force_login(user)
    return client


def test_a_reviewer_removes_a_person_from_the_items_page_with_a_comment(client, auditor, profile, ana, otto):
    review = open_campaign(auditor, profile)
    page = browser(client, otto).get(reverse("audit:review_items", args=[review.pk]))
    assert page.status_code == 200
    assert b"Ana (ana): may request appdb read-only" in page.content
    assert b"Otto (otto): may approve" not in page.content  # not his own
    anas = item(review, ana)
    answer = client.post(
        reverse("audit:review_items", args=[review.pk]),
        {"item": anas.pk, "decision": "remove", "comment": "Left the on-call rota"},
        follow=True,
    )
    assert b"the portal refuses it from now on" in answer.content
    assert item(review, ana).decision == "remove" and not policy.may_request(ana, profile)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"item": "abc", "decision": "keep", "comment": "fine"}, b"Item: Enter a whole number."),
        ({"decision": "keep", "comment": "fine"}, b"Item: Say which item."),
        ({"item": "ana", "decision": "maybe"}, b"Decision: Select a valid choice."),
        ({"item": "ana", "decision": "keep", "comment": "ok"}, b"Comment: Say why in 5 to 2000 characters"),
    ],
)
def test_a_bad_decision_gets_a_clear_message_not_a_server_error(client, auditor, profile, ana, otto, data, message):
    review = open_campaign(auditor, profile)
    if data.get("item") == "ana":
        data = {**data, "item": item(review, ana).pk}
    answer = browser(client, otto).post(reverse("audit:review_items", args=[review.pk]), data, follow=True)
    assert answer.status_code == 200
    assert message in answer.content
    assert item(review, ana).decision == ""


def test_an_item_of_another_campaign_is_not_found_there(client, auditor, profile, rw_profile, ana, otto):
    first, second = open_campaign(auditor, profile), open_campaign(auditor, rw_profile)
    answer = browser(client, otto).post(
        reverse("audit:review_items", args=[second.pk]),
        {"item": item(first, ana).pk, "decision": "keep", "comment": "Still on call for it"},
    )
    assert answer.status_code == 404
    assert item(first, ana).decision == ""


def test_deciding_about_oneself_from_the_page_is_forbidden(client, auditor, profile, marc):
    review = open_campaign(auditor, profile)
    answer = browser(client, marc).post(
        reverse("audit:review_items", args=[review.pk]),
        {"item": item(review, marc).pk, "decision": "keep", "comment": "I need it, trust me"},
    )
    assert answer.status_code == 403
    assert b"your own eligibility" in answer.content


def test_the_campaign_page_shows_progress_per_profile_and_reviewer(client, auditor, profile, ana, otto):
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="keep", comment="Still on call for it")
    page = browser(client, auditor).get(reverse("audit:review", args=[review.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "<td>appdb read-only</td><td>4</td><td>1</td><td>0</td><td>25 %</td>" in text
    assert "<td>otto</td><td>3</td><td>1</td>" in text
    assert "Download the evidence (CSV)" in text


def test_the_evidence_lists_every_item_with_its_decision_and_the_download_is_audited(
    client, auditor, profile, ana, otto
):
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="remove", comment="=HYPERLINK(evil)")
    answer = browser(client, auditor).get(reverse("audit:review_evidence", args=[review.pk]))
    assert answer.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(answer.streaming_content).decode())))
    assert len(rows) == 4
    anas = next(r for r in rows if r["person"] == "ana")
    assert (anas["decision"], anas["decided_by"], anas["role"], anas["by_rule"]) == (
        "remove",
        "otto",
        "requester",
        "false",
    )
    assert anas["comment"] == "'=HYPERLINK(evil)"  # a spreadsheet does not run it
    assert AuditEvent.objects.filter(action="report.downloaded", details__report="access_review").exists()


def test_only_auditors_download_the_evidence(client, auditor, profile, ana, otto):
    review = open_campaign(auditor, profile)
    assert browser(client, otto).get(reverse("audit:review_evidence", args=[review.pk])).status_code == 403


def test_an_auditor_opens_a_campaign_from_the_page_and_a_bad_due_date_is_explained(client, auditor, profile, ana):
    url = reverse("audit:reviews")
    c = browser(client, auditor)
    bad = c.post(url, {"profiles": [profile.pk], "due_at": "yesterday", "undecided": "keep", "period_days": "90"})
    assert bad.status_code == 400 and b"Give a date and time" in bad.content
    past = c.post(
        url, {"profiles": [profile.pk], "due_at": "2020-01-01 09:00", "undecided": "keep", "period_days": "90"}
    )
    assert past.status_code == 400 and b"at least an hour from now" in past.content
    good = c.post(
        url,
        {
            "profiles": [profile.pk],
            "due_at": (timezone.localtime() + 30 * DAY).strftime("%Y-%m-%d %H:%M"),
            "undecided": "remove",
            "period_days": "30",
        },
    )
    review = AccessReview.objects.get()
    assert good.status_code == 302 and good["Location"] == reverse("audit:review", args=[review.pk])
    assert review.undecided == "remove"


def test_the_campaign_list_shows_removals_the_idp_has_not_caught_up_with(client, auditor, profile, ana, otto):
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="remove", comment="Left the on-call rota")
    text = browser(client, auditor).get(reverse("audit:reviews")).content.decode()
    assert "Removals the IdP has not caught up with" in text
    assert "<td>Ana (ana)</td>" in text and "<td>engineers</td>" in text


# The catalog's schedules ---------------------------------------------------------------------------------------

CATALOG = """\
targets:
  appdb:
    kind: postgres
    config: {host: 127.0.0.1, port: 5432, dbname: appdb}
    secret_env: JIT_TEST_PG_DSN
profiles:
  ro:
    title: appdb read-only
    target: appdb
    scope: {roles: [app_readonly]}
    max_duration: 4h
    requestable_by: [engineers]
    approvers: {group: db-approvers}
    reviewers: [otto]
reviews:
  quarterly:
    title: Quarterly database review
    every: quarter
    due_in: 14d
    undecided: remove
    profiles: [ro]
"""


@pytest.fixture
def catalog_file(tmp_path):
    def write(text):
        path = tmp_path / "catalog.yaml"
        path.write_text(text)
        return str(path)

    return write


def test_the_catalog_plans_and_applies_a_review_schedule_and_reviewers_idempotently(db, catalog_file):
    path = catalog_file(CATALOG)
    text = catalog.plan(path).render()
    assert "+ review schedule quarterly: add" in text and "every: (none) -> quarter" in text
    assert "reviewers otto are no active portal users" in text
    catalog.apply(path)
    schedule = ReviewSchedule.objects.get(name="quarterly")
    assert (schedule.every, schedule.due_in, schedule.undecided) == ("quarter", 14 * DAY, "remove")
    assert schedule.profiles == ["ro"]
    assert AccessProfile.objects.get(name="ro").review_reviewers == ["otto"]
    assert catalog.apply(path)[0].empty
    changed = catalog_file(CATALOG.replace("every: quarter", "every: year"))
    assert "every: quarter -> year" in catalog.plan(changed).render()
    gone = catalog_file(CATALOG.split("reviews:")[0])
    assert "- review schedule quarterly: remove" in catalog.plan(gone).render()
    catalog.apply(gone)
    assert not ReviewSchedule.objects.exists()


@pytest.mark.parametrize(
    "change, fragment",
    [
        (("every: quarter", "every: fortnight"), "reviews.quarterly.every: one of month, quarter"),
        (("due_in: 14d", "due_in: 120d"), "must end before the next quarter's campaign opens"),
        (("due_in: 14d", "due_in: 2h"), "at least a day"),
        (("undecided: remove", "undecided: ignore"), "keep or remove"),
        (("profiles: [ro]", "profiles: [nosuch]"), "no profile named 'nosuch'"),
        (("reviewers: [otto]", "reviewers: otto"), "ro.reviewers: must be a list of usernames"),
    ],
)
def test_a_bad_review_schedule_is_refused_with_its_line_and_field(db, catalog_file, change, fragment):
    path = catalog_file(CATALOG.replace(*change))
    with pytest.raises(catalog.CatalogError) as raised:
        catalog.plan(path)
    assert any(fragment in e for e in raised.value.errors), raised.value.errors
    assert not ReviewSchedule.objects.exists()


def test_a_schedule_opens_one_campaign_per_period_with_the_catalogs_reviewers(db, catalog_file, ana, otto, marc):
    catalog.apply(catalog_file(CATALOG))
    now = datetime.datetime(2026, 11, 20, 9, 0, tzinfo=datetime.UTC)
    [first] = reviews.open_scheduled_reviews(now=now)
    review = AccessReview.objects.get(pk=first)
    assert (review.title, review.opened_by, review.undecided) == ("Quarterly database review: 2026-10", None, "remove")
    assert review.due_at == now + 14 * DAY
    assert reviews.open_scheduled_reviews(now=now + DAY) == []  # one per quarter
    anas = review.items.select_related("profile", "person").get(person=ana, role="requester")
    assert reviews.item_reviewers(anas) == [otto]  # the catalog's reviewer, not the approvers
    assert len(reviews.open_scheduled_reviews(now=datetime.datetime(2027, 1, 2, tzinfo=datetime.UTC))) == 1


def test_period_starts_follow_the_calendar():
    at = datetime.datetime(2026, 8, 15, 12, 0, tzinfo=datetime.UTC)
    starts = [reviews.period_start(every, at).date().isoformat() for every in ("month", "quarter", "half-year", "year")]
    assert starts == [
        "2026-08-01",
        "2026-07-01",
        "2026-07-01",
        "2026-01-01",
    ]


def test_an_approver_removed_by_a_review_does_not_decide_as_a_delegate_either(
    auditor, pending_request, profile, marc, otto
):
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, otto, Role.APPROVER).pk, actor=marc, decision="remove", comment="Moved teams")
    now = timezone.now()
    lifecycle.delegate_approvals(actor=marc, delegate=otto, starts_at=now, ends_at=now + DAY, reason="holiday")
    otto = type(otto).objects.get(pk=otto.pk)
    assert policy.approval_refusal(otto, pending_request) == (
        "An access review removed you from those who may approve appdb read-only."
    )
    assert otto not in selectors.deciders_of(pending_request)


def test_where_managers_approve_a_requesters_manager_reviews_her_and_nobody_else_falls_to_the_admins(
    auditor, rw_profile, ana, bob, marc, admin_user
):
    review = open_campaign(auditor, rw_profile)
    assert reviews.item_reviewers(item(review, ana)) == [marc]
    assert reviews.item_reviewers(item(review, bob)) == [admin_user]  # no manager, no approver group
    assert not review.items.filter(role=Role.APPROVER).exists()  # "the requester's manager" names nobody
