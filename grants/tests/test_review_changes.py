"""Access reviews, changed after the fact: close a campaign early, change a decision, reinstate a removal, the admin.

grants/tests/test_reviews.py has the campaigns themselves; the API's side is api/tests/test_review_changes_api.py.
"""

import csv
import io
import threading
import time

import pytest
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from grants import lifecycle, policy, reviews, selectors
from grants.models import AccessRequest, AccessReview, AccessReviewItem, EligibilityRemoval, Grant

from .support import DAY, item, open_campaign, submit

Role = AccessReviewItem.Role


def browser(client, user):
    client.force_login(user)
    return client


def evidence(client, auditor, review) -> dict:
    answer = browser(client, auditor).get(reverse("audit:review_evidence", args=[review.pk]))
    assert answer.status_code == 200
    rows = csv.DictReader(io.StringIO(b"".join(answer.streaming_content).decode()))
    return {(r["person"], r["role"]): r for r in rows}


def removed_by(auditor, review, person, reviewer, comment="Left the on-call rota"):
    """`reviewer` removes `person` (requester), and `auditor` closes the campaign: the removal outlives it."""
    reviews.decide_item(item(review, person).pk, actor=reviewer, decision="remove", comment=comment)
    reviews.close_review(review.pk, actor=auditor)
    return EligibilityRemoval.objects.get(person=person, profile=review.profiles.get())


# Closing early -------------------------------------------------------------------------------------------------


def test_an_opener_closes_a_campaign_early_and_the_undecided_follow_its_remove_rule_as_at_the_due_date(
    auditor, profile, ana, bob, otto
):
    review = open_campaign(auditor, profile, undecided="remove")
    reviews.decide_item(item(review, bob).pk, actor=otto, decision="keep", comment="Still deploys")
    closed = reviews.close_review(review.pk, actor=auditor)
    assert (closed.closed_by, closed.closed_at is not None) == (auditor, True)
    anas = item(review, ana)
    assert (anas.decision, anas.by_rule, anas.decided_by) == ("remove", True, None)
    assert "closed the campaign early" in anas.comment
    assert item(review, bob).decision == "keep"
    assert not policy.may_request(ana, profile) and policy.may_request(bob, profile)
    event = AuditEvent.objects.get(action="access_review.closed")
    assert event.actor == auditor
    assert (event.details["early"], event.details["applied"]) == (True, 4)  # all but bob's
    assert event.details["closed_at"] and event.details["due_at"]
    assert AuditEvent.objects.filter(action="eligibility.removed", details__person="ana").exists()
    assert reviews.close_due_reviews(now=timezone.now() + 30 * DAY) == []  # closed already: nothing at the due date


def test_a_campaign_closed_early_takes_no_more_decisions_nor_changes(auditor, profile, ana, bob, otto, marc):
    review = open_campaign(auditor, profile, undecided="keep")
    reviews.decide_item(item(review, bob).pk, actor=otto, decision="keep", comment="Still deploys")
    reviews.close_review(review.pk, actor=auditor)
    assert item(review, ana).decision == "keep" and policy.may_request(ana, profile)
    with pytest.raises(lifecycle.TransitionError, match="closed; its items can no longer be decided"):
        reviews.decide_item(item(review, ana).pk, actor=otto, decision="remove", comment="too late now")
    with pytest.raises(lifecycle.TransitionError, match="closed"):
        reviews.decide_item(item(review, bob).pk, actor=marc, decision="remove", comment="changed my mind")
    with pytest.raises(lifecycle.TransitionError, match="already closed"):
        reviews.close_review(review.pk, actor=auditor)
    assert not EligibilityRemoval.objects.exists()


def test_only_those_who_may_open_campaigns_close_one_and_the_refusal_is_recorded(auditor, profile, ana, otto, eve):
    review = open_campaign(auditor, profile)
    for who in (otto, eve):
        with pytest.raises(lifecycle.NotAllowedError, match="may close one"):
            reviews.close_review(review.pk, actor=who)
    assert AccessReview.objects.get(pk=review.pk).is_open
    assert AuditEvent.objects.filter(action="access_review.close_refused", actor=otto).exists()


def test_an_opener_whose_own_eligibility_is_undecided_may_not_close_the_campaign(
    auditor, profile, groups, ana, otto, admin_user
):
    admin_user.groups.add(groups["engineers"])
    review = open_campaign(auditor, profile)
    with pytest.raises(lifecycle.NotAllowedError, match="Your own eligibility in this campaign is undecided"):
        reviews.close_review(review.pk, actor=admin_user)
    reviews.decide_item(item(review, admin_user).pk, actor=otto, decision="keep", comment="Runs the cluster")
    assert reviews.close_review(review.pk, actor=admin_user).closed_by == admin_user


def test_the_campaign_page_closes_it_early_once_the_box_is_ticked(client, auditor, profile, ana, otto):
    review = open_campaign(auditor, profile, undecided="remove")
    c = browser(client, auditor)
    page = c.get(reverse("audit:review", args=[review.pk])).content.decode()
    assert "Close the campaign now" in page
    assert "The 4 undecided item(s) will follow the campaign's rule, exactly as at the due date" in page
    url = reverse("audit:review_close", args=[review.pk])
    unticked = c.post(url, {}, follow=True)
    assert "Tick the box to confirm" in unticked.content.decode()
    assert AccessReview.objects.get(pk=review.pk).is_open
    closed = c.post(url, {"confirm": "on"}, follow=True).content.decode()
    assert "closed before its due date: 4 undecided item(s) removed" in closed
    assert "by audra, before its due date" in closed
    assert "Close the campaign now" not in closed
    assert not policy.may_request(ana, profile)


def test_a_reviewer_finds_a_closed_campaign_refusing_decisions_with_a_clear_message(
    client, auditor, profile, ana, otto
):
    review = open_campaign(auditor, profile)
    reviews.close_review(review.pk, actor=auditor)
    c = browser(client, otto)
    page = c.get(reverse("audit:review_items", args=[review.pk])).content.decode()
    assert "by the campaign's rule" in page and "Change to" not in page
    answer = c.post(
        reverse("audit:review_items", args=[review.pk]),
        {"item": item(review, ana).pk, "decision": "remove", "comment": "Left the on-call rota"},
        follow=True,
    )
    assert answer.status_code == 200
    assert "This access review is closed; its items can no longer be decided." in answer.content.decode()
    assert item(review, ana).decision == "keep"


def test_reviewers_and_outsiders_may_not_close_a_campaign_from_the_page(client, auditor, profile, ana, otto, eve):
    review = open_campaign(auditor, profile)
    url = reverse("audit:review_close", args=[review.pk])
    assert (
        "Close the campaign now"
        not in browser(client, otto).get(reverse("audit:review", args=[review.pk])).content.decode()
    )
    assert client.post(url, {"confirm": "on"}).status_code == 403
    assert browser(client, eve).post(url, {"confirm": "on"}).status_code == 403
    assert browser(client, auditor).get(url).status_code == 405
    assert browser(client, auditor).post(reverse("audit:review_close", args=[review.pk + 99]), {}).status_code == 404
    assert AccessReview.objects.get(pk=review.pk).is_open


# Changing a decision -------------------------------------------------------------------------------------------


def test_a_reviewer_changes_keep_to_remove_and_each_decision_is_its_own_audit_event(
    auditor, active_grant, profile, ana, otto, marc
):
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="keep", comment="Still on call for it")
    changed = reviews.decide_item(item(review, ana).pk, actor=marc, decision="remove", comment="She moved teams")
    assert (changed.decision, changed.decided_by, changed.changed_from) == ("remove", marc, "keep")
    assert changed.earlier_decisions.endswith("keep by otto: Still on call for it")
    decided = AuditEvent.objects.filter(action="access_review.decided").order_by("id")
    assert [(e.actor, e.details["decision"], e.details.get("changed_from")) for e in decided] == [
        (otto, "keep", None),
        (marc, "remove", "keep"),
    ]
    assert not policy.may_request(ana, profile)
    assert Grant.objects.get(pk=active_grant.pk).end_reason == "policy"


def test_changing_remove_to_keep_lifts_the_removal_but_what_it_ended_stays_ended(
    auditor, active_grant, profile, ana, otto
):
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="remove", comment="Left the on-call rota")
    assert Grant.objects.get(pk=active_grant.pk).status == "revoking"
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="keep", comment="She is back on the rota")
    removal = EligibilityRemoval.objects.get(person=ana, profile=profile)
    assert (removal.in_force, removal.reinstated_by, removal.reinstate_reason) == (
        False,
        otto,
        "She is back on the rota",
    )
    event = AuditEvent.objects.get(action="eligibility.reinstated")
    assert (event.actor, event.details["person"], event.details["review"]) == (otto, "ana", review.pk)
    # The grant the removal ended stays ended, and none is made in its place.
    grant = Grant.objects.get(pk=active_grant.pk)
    assert (grant.status, grant.end_reason) == ("revoking", "policy")
    assert Grant.objects.filter(user=ana).count() == 1
    # Through the policy, as the removal was: she may ask again.
    assert policy.may_request(ana, profile) and profile in selectors.requestable_profiles(ana)
    assert submit(ana, profile).status == AccessRequest.Status.PENDING


def test_a_request_the_removal_cancelled_stays_cancelled_after_the_change(auditor, pending_request, profile, ana, otto):
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="remove", comment="No longer needs it")
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="keep", comment="Needs it after all")
    assert AccessRequest.objects.get(pk=pending_request.pk).status == AccessRequest.Status.CANCELLED
    assert AccessRequest.objects.filter(requester=ana, status="pending").count() == 0


def test_an_approver_changed_back_to_keep_decides_the_profile_again(auditor, pending_request, profile, marc, otto):
    review = open_campaign(auditor, profile)
    ottos = item(review, otto, Role.APPROVER)
    reviews.decide_item(ottos.pk, actor=marc, decision="remove", comment="Moved teams")
    assert not policy.may_decide(otto, pending_request)
    reviews.decide_item(ottos.pk, actor=marc, decision="keep", comment="Moved back, owns it again")
    assert policy.may_decide(otto, pending_request)
    assert lifecycle.approve_request(pending_request.pk, actor=otto, comment="ok").status == "approved"


def test_remove_keep_remove_removes_again_and_keeps_every_earlier_decision(auditor, profile, ana, otto, marc):
    review = open_campaign(auditor, profile)
    pk = item(review, ana).pk
    reviews.decide_item(pk, actor=otto, decision="remove", comment="Left the on-call rota")
    reviews.decide_item(pk, actor=marc, decision="keep", comment="Back on the rota")
    reviews.decide_item(pk, actor=otto, decision="remove", comment="Rota changed again")
    assert not policy.may_request(ana, profile)
    anas = item(review, ana)
    assert anas.changed_from == "keep"
    assert [line.split(" ", 1)[1] for line in anas.earlier_decisions.splitlines()] == [
        "remove by otto: Left the on-call rota",
        "keep by marc: Back on the rota",
    ]
    assert AuditEvent.objects.filter(action="access_review.decided").count() == 3
    assert AuditEvent.objects.filter(action="eligibility.removed").count() == 2
    assert EligibilityRemoval.objects.in_force().get(person=ana).item_id == pk


def test_the_person_under_review_cannot_change_the_decision_about_her(auditor, profile, marc, otto):
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, marc).pk, actor=otto, decision="remove", comment="Too many hats")
    with pytest.raises(lifecycle.NotAllowedError, match="your own eligibility"):
        reviews.decide_item(item(review, marc).pk, actor=marc, decision="keep", comment="I need it, trust me")
    assert item(review, marc).decision == "remove" and not policy.may_request(marc, profile)
    assert AuditEvent.objects.filter(action="access_review.decide_refused", actor=marc).exists()


def test_a_change_needs_a_comment_and_the_same_decision_again_is_refused(auditor, profile, ana, otto):
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="keep", comment="Still on call for it")
    with pytest.raises(lifecycle.InvalidRequestError) as raised:
        reviews.decide_item(item(review, ana).pk, actor=otto, decision="remove", comment="no")
    assert set(raised.value.errors) == {"comment"}
    with pytest.raises(lifecycle.TransitionError, match="To change it, choose the other decision"):
        reviews.decide_item(item(review, ana).pk, actor=otto, decision="keep", comment="Still on call, really")
    assert item(review, ana).changed_from == ""


def test_the_evidence_shows_the_current_decision_and_what_it_replaced(client, auditor, profile, ana, bob, otto, marc):
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="remove", comment="Left the on-call rota")
    reviews.decide_item(item(review, ana).pk, actor=marc, decision="keep", comment="Back on the rota")
    reviews.decide_item(item(review, bob).pk, actor=otto, decision="keep", comment="Still deploys")
    rows = evidence(client, auditor, review)
    anas, bobs = rows[("ana", "requester")], rows[("bob", "requester")]
    assert (anas["decision"], anas["decided_by"], anas["comment"], anas["changed_from"]) == (
        "keep",
        "marc",
        "Back on the rota",
        "remove",
    )
    assert anas["earlier_decisions"].endswith("remove by otto: Left the on-call rota")
    assert (anas["removal_reinstated_by"], anas["removal_reinstate_reason"]) == ("marc", "Back on the rota")
    assert anas["removal_reinstated_at"]
    assert (bobs["changed_from"], bobs["earlier_decisions"], bobs["removal_reinstated_at"]) == ("", "", "")
    assert (anas["closed_at"], anas["closed_early_by"]) == ("", "")
    reviews.close_review(review.pk, actor=auditor)
    assert evidence(client, auditor, review)[("ana", "requester")]["closed_early_by"] == "audra"


def test_a_reviewer_changes_a_decision_from_the_items_page(client, auditor, profile, ana, otto):
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="remove", comment="Left the on-call rota")
    c = browser(client, otto)
    page = c.get(reverse("audit:review_items", args=[review.pk])).content.decode()
    assert "Change to keep" in page
    answer = c.post(
        reverse("audit:review_items", args=[review.pk]),
        {"item": item(review, ana).pk, "decision": "keep", "comment": "Back on the rota"},
        follow=True,
    ).content.decode()
    assert "changed to keep: the removal no longer applies (what it ended stays ended)" in answer
    assert "(changed from remove)" in answer and "remove by otto: Left the on-call rota" in answer
    assert policy.may_request(ana, profile)
    campaign_page = browser(client, auditor).get(reverse("audit:review", args=[review.pk])).content.decode()
    assert "Keep (changed from remove)" in campaign_page


@pytest.mark.postgres_only("lines a decision up behind the closing's row locks (FOR UPDATE) held in another session")
@pytest.mark.django_db(transaction=True)
def test_a_decision_waiting_for_a_closing_finds_the_campaign_closed_not_the_rules_decision_to_change(
    auditor, profile, ana, otto
):
    review = open_campaign(auditor, profile, undecided="keep")
    anas = item(review, ana).pk
    closing, proceed, outcomes = threading.Event(), threading.Event(), []

    def close():
        try:
            with transaction.atomic():  # the closing's locks are held until this commits
                reviews.close_review(review.pk, actor=auditor)
                closing.set()
                proceed.wait(60)
        finally:
            connection.close()

    def decide():
        try:
            reviews.decide_item(anas, actor=otto, decision="remove", comment="Left the on-call rota")
            outcomes.append("decided")
        except lifecycle.TransitionError as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    closer = threading.Thread(target=close)
    closer.start()
    assert closing.wait(60)
    decider = threading.Thread(target=decide)
    decider.start()
    for _ in range(600):  # until the decision waits for the item's lock
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0] >= 1:
                break
        time.sleep(0.05)
    proceed.set()
    closer.join()
    decider.join()
    assert outcomes == ["This access review is closed; its items can no longer be decided."]
    anas = AccessReviewItem.objects.get(pk=anas)
    assert (anas.decision, anas.by_rule, anas.changed_from) == ("keep", True, "")
    assert policy.may_request(ana, profile) and not EligibilityRemoval.objects.exists()


# Reinstating after the campaign closed ------------------------------------------------------------------------


def test_an_opener_reinstates_a_removal_after_the_campaign_closed_and_she_may_request_again(
    auditor, profile, ana, otto
):
    review = open_campaign(auditor, profile)
    removal = removed_by(auditor, review, ana, otto)
    assert selectors.removals_behind_idp()[0][0] == removal
    reinstated = reviews.reinstate_eligibility(removal.pk, actor=auditor, reason="Rejoined the rota, INC-5150")
    assert (reinstated.in_force, reinstated.reinstated_by) == (False, auditor)
    assert policy.may_request(ana, profile)
    assert submit(ana, profile).status == AccessRequest.Status.PENDING
    event = AuditEvent.objects.get(action="eligibility.reinstated")
    assert (event.actor, event.details["reason"], event.details["person"]) == (
        auditor,
        "Rejoined the rota, INC-5150",
        "ana",
    )
    assert selectors.removals_behind_idp() == []
    assert item(review, ana).decision == "remove"  # the campaign's record stays as it closed


def test_a_reinstated_person_is_reviewed_again_by_the_next_campaign_and_may_be_removed_again(
    auditor, profile, ana, otto
):
    removal = removed_by(auditor, open_campaign(auditor, profile), ana, otto)
    reviews.reinstate_eligibility(removal.pk, actor=auditor, reason="Rejoined the rota")
    second = open_campaign(auditor, profile)
    reviews.decide_item(item(second, ana).pk, actor=otto, decision="remove", comment="Left the rota again")
    assert not policy.may_request(ana, profile)
    assert EligibilityRemoval.objects.filter(person=ana).count() == 2
    assert EligibilityRemoval.objects.in_force().get(person=ana).item.review == second


def test_a_removal_of_an_open_campaign_is_changed_by_its_reviewers_not_reinstated(auditor, profile, ana, otto):
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="remove", comment="Left the on-call rota")
    removal = EligibilityRemoval.objects.get(person=ana)
    with pytest.raises(lifecycle.TransitionError, match="still open: a reviewer changes the item's decision"):
        reviews.reinstate_eligibility(removal.pk, actor=auditor, reason="Rejoined the rota")
    assert not policy.may_request(ana, profile)


def test_reinstating_needs_the_permission_a_reason_and_a_removal_in_force(auditor, profile, ana, otto):
    removal = removed_by(auditor, open_campaign(auditor, profile), ana, otto)
    with pytest.raises(lifecycle.NotAllowedError, match="Only those who may open access reviews"):
        reviews.reinstate_eligibility(removal.pk, actor=otto, reason="I changed my mind")
    assert AuditEvent.objects.filter(action="eligibility.reinstate_refused", actor=otto).exists()
    with pytest.raises(lifecycle.InvalidRequestError) as raised:
        reviews.reinstate_eligibility(removal.pk, actor=auditor, reason=" ok ")
    assert set(raised.value.errors) == {"reason"}
    reviews.reinstate_eligibility(removal.pk, actor=auditor, reason="Rejoined the rota")
    with pytest.raises(lifecycle.TransitionError, match="already reinstated"):
        reviews.reinstate_eligibility(removal.pk, actor=auditor, reason="Rejoined the rota")
    assert AuditEvent.objects.filter(action="eligibility.reinstated").count() == 1


def test_nobody_reinstates_themselves(auditor, profile, groups, otto, admin_user):
    admin_user.groups.add(groups["engineers"])
    removal = removed_by(auditor, open_campaign(auditor, profile), admin_user, otto)
    with pytest.raises(lifecycle.NotAllowedError, match="You cannot reinstate your own eligibility"):
        reviews.reinstate_eligibility(removal.pk, actor=admin_user, reason="I still run the cluster")
    assert not policy.may_request(admin_user, profile)
    assert AuditEvent.objects.filter(action="eligibility.reinstate_refused", actor=admin_user).exists()
    reviews.reinstate_eligibility(removal.pk, actor=auditor, reason="Still runs the cluster")
    assert policy.may_request(admin_user, profile)


def test_the_removals_list_reinstates_with_a_required_reason(client, auditor, profile, ana, otto):
    removal = removed_by(auditor, open_campaign(auditor, profile), ana, otto)
    c = browser(client, auditor)
    page = c.get(reverse("audit:reviews")).content.decode()
    assert f'action="{reverse("audit:removal_reinstate", args=[removal.pk])}"' in page
    url = reverse("audit:removal_reinstate", args=[removal.pk])
    empty = c.post(url, {"reason": ""}, follow=True).content.decode()
    assert "Reason: Say why in 5 to 2000 characters" in empty
    assert not policy.may_request(ana, profile)
    done = c.post(url, {"reason": "Rejoined the rota"}, follow=True).content.decode()
    assert "ana may request appdb read-only again: the removal is reinstated." in done
    assert "None: every removal is reflected in the IdP" in done
    assert policy.may_request(ana, profile)
    again = c.post(url, {"reason": "Rejoined the rota"}, follow=True).content.decode()
    assert "already reinstated" in again


def test_a_removal_the_idp_caught_up_with_stays_listed_in_force_and_is_reinstated_there(
    client, auditor, profile, groups, ana, otto
):
    removal = removed_by(auditor, open_campaign(auditor, profile), ana, otto)
    ana.groups.remove(groups["engineers"])  # the IdP's group managers did their part
    c = browser(client, auditor)
    page = c.get(reverse("audit:reviews")).content.decode()
    assert "None: every removal is reflected in the IdP" in page
    assert "none: the IdP has caught up" in page
    url = reverse("audit:removal_reinstate", args=[removal.pk])
    assert f'action="{url}"' in page
    # Put back in the group, she is still refused until the removal is reinstated.
    ana.groups.add(groups["engineers"])
    assert not policy.may_request(ana, profile)
    done = c.post(url, {"reason": "Back on the rota"}, follow=True).content.decode()
    assert "ana may request appdb read-only again: the removal is reinstated." in done
    assert policy.may_request(ana, profile)


def test_the_removals_list_refuses_reviewers_outsiders_and_the_person_herself(
    client, auditor, profile, groups, otto, eve, admin_user
):
    admin_user.groups.add(groups["engineers"])
    removal = removed_by(auditor, open_campaign(auditor, profile), admin_user, otto)
    url = reverse("audit:removal_reinstate", args=[removal.pk])
    assert browser(client, otto).post(url, {"reason": "I changed my mind"}).status_code == 403
    assert browser(client, eve).post(url, {"reason": "let me help"}).status_code == 403
    page = browser(client, admin_user).get(reverse("audit:reviews")).content.decode()
    assert "Not yours to reinstate." in page
    mine = client.post(url, {"reason": "I still run the cluster"})
    assert mine.status_code == 403 and b"You cannot reinstate your own eligibility" in mine.content
    assert client.post(reverse("audit:removal_reinstate", args=[removal.pk + 99]), {}).status_code == 404
    assert client.get(url).status_code == 405
    assert EligibilityRemoval.objects.get(pk=removal.pk).in_force


# The Django admin ----------------------------------------------------------------------------------------------


ADMIN_PAGES = ("accessreview", "accessreviewitem", "eligibilityremoval", "reviewschedule")


def test_the_admin_lists_and_searches_the_review_rows_and_changes_none(client, auditor, profile, ana, otto, admin_user):
    from grants.models import ReviewSchedule  # noqa: PLC0415 (a sample row of the last model)

    ReviewSchedule.objects.create(name="quarterly", title="Quarterly", every="quarter")
    removal = removed_by(auditor, open_campaign(auditor, profile), ana, otto)
    c = browser(client, admin_user)
    listed = c.get("/admin/grants/eligibilityremoval/", {"q": "ana", "role": "requester"})
    assert listed.status_code == 200 and b"appdb read-only" in listed.content
    assert c.get("/admin/grants/accessreviewitem/", {"q": "ana", "decision__exact": "remove"}).status_code == 200
    assert c.get("/admin/grants/accessreview/", {"q": "Access review"}).status_code == 200
    assert c.get("/admin/grants/reviewschedule/", {"q": "quarter"}).status_code == 200
    for model in ADMIN_PAGES:
        assert c.get(f"/admin/grants/{model}/add/").status_code == 403
    change = f"/admin/grants/eligibilityremoval/{removal.pk}/change/"
    page = c.get(change)
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert c.post(change, {"reinstated_at_0": "2026-01-01", "reinstated_at_1": "00:00"}).status_code == 403
    assert c.post(f"/admin/grants/eligibilityremoval/{removal.pk}/delete/", {"post": "yes"}).status_code == 403
    assert EligibilityRemoval.objects.get(pk=removal.pk).in_force


def test_the_idp_group_managers_are_not_told_of_a_removal_changed_back_before_the_message_went(
    auditor, profile, ana, otto, admin_user, mailoutbox, settings
):
    from notifications import tasks  # noqa: PLC0415 (the edge's task, run here as the worker would)

    settings.JIT_IDP_GROUP_MANAGERS = []
    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="remove", comment="Left the on-call rota")
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="keep", comment="Back on the rota")
    mailoutbox.clear()
    assert tasks.eligibility_removed(EligibilityRemoval.objects.get().pk) == 0
    assert mailoutbox == []


def test_a_reinstatement_tells_the_person_and_the_idp_group_managers(
    auditor, profile, groups, ana, otto, admin_user, mailoutbox, settings, django_capture_on_commit_callbacks
):
    from notifications import tasks  # noqa: PLC0415 (the edge's task, run here as the worker would)

    settings.JIT_IDP_GROUP_MANAGERS = []
    removal = removed_by(auditor, open_campaign(auditor, profile), ana, otto)
    ana.groups.remove(groups["engineers"])  # the IdP caught up
    with django_capture_on_commit_callbacks(execute=False) as announced:
        reviews.reinstate_eligibility(removal.pk, actor=auditor, reason="Back on the on-call rota")
    assert announced, "the reinstatement is announced once it commits"
    mailoutbox.clear()
    assert tasks.eligibility_reinstated(removal.pk) >= 2
    [hers] = [m for m in mailoutbox if m.to == [ana.email]]
    assert hers.subject.endswith("You may request appdb read-only again")
    assert "Reason: Back on the on-call rota" in hers.body
    [managers] = [m for m in mailoutbox if m.to == [admin_user.email]]
    assert "ana may request appdb read-only again" in managers.subject
    assert "put them back in its group in the identity provider" in managers.body


def test_nobody_is_told_of_a_reinstatement_removed_again_before_the_message_went(
    auditor, profile, ana, otto, marc, mailoutbox
):
    from notifications import tasks  # noqa: PLC0415 (the edge's task, run here as the worker would)

    review = open_campaign(auditor, profile)
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="remove", comment="Left the on-call rota")
    reviews.decide_item(item(review, ana).pk, actor=otto, decision="keep", comment="Back on the rota")
    reviews.decide_item(item(review, ana).pk, actor=marc, decision="remove", comment="Left after all")
    mailoutbox.clear()
    assert tasks.eligibility_reinstated(EligibilityRemoval.objects.get().pk) == 0
    assert mailoutbox == []
