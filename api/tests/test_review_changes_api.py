"""Access reviews changed through the API: close a campaign early, change a decision, reinstate a removal.

The same rules as the pages (grants/tests/test_review_changes.py), answered as JSON.
"""

import datetime
import json

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.utils import timezone

from accounts import tokens
from audit.models import AuditEvent
from grants import policy, reviews
from grants.models import AccessReview, EligibilityRemoval


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    # The counters live in the (local-memory) cache, which outlives a test's transaction.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def opener(audra):
    audra.user_permissions.add(Permission.objects.get(codename="open_accessreview"))
    return type(audra).objects.get(pk=audra.pk)


@pytest.fixture
def campaign(opener, profile, ana, otto):
    return reviews.open_review(
        actor=opener,
        profiles=[profile],
        due_at=timezone.now() + datetime.timedelta(days=14),
        title="Quarterly",
        undecided="remove",
    )


def call(client, user, method, path, body=None):
    secret = tokens.create_token(actor=user, name="test", days=30)[1]
    headers = {"Authorization": f"Bearer {secret}"}
    if method == "get":
        return client.get("/api/v1" + path, headers=headers)
    data = "" if body is None else json.dumps(body)
    return client.post("/api/v1" + path, data=data, content_type="application/json", headers=headers)


def anas(campaign, ana):
    return campaign.items.get(person=ana, role="requester")


def decide(client, user, item, decision, comment):
    return call(client, user, "post", f"/reviews/items/{item.pk}/decide", {"decision": decision, "comment": comment})


# Closing early -------------------------------------------------------------------------------------------------


def test_an_opener_closes_a_campaign_early_and_the_undecided_follow_its_rule(client, campaign, opener, ana, profile):
    answer = call(client, opener, "post", f"/reviews/{campaign.pk}/close")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert (body["open"], body["closed_by"], body["decided"], body["items"]) == (False, "audra", 4, 4)
    assert not policy.may_request(ana, profile)  # the campaign's rule: remove
    event = AuditEvent.objects.get(action="access_review.closed")
    assert event.actor == opener and event.details["early"] is True


def test_a_closed_campaign_refuses_decisions_and_a_second_close_with_a_conflict(
    client, campaign, opener, ana, otto, marc
):
    # The approvers keep their part, so otto still reviews ana once the rule has removed the rest.
    assert decide(client, otto, campaign.items.get(person=marc, role="approver"), "keep", "Owns it").status_code == 200
    assert decide(client, marc, campaign.items.get(person=otto, role="approver"), "keep", "Owns it").status_code == 200
    call(client, opener, "post", f"/reviews/{campaign.pk}/close")
    refused = decide(client, otto, anas(campaign, ana), "keep", "Still on call for it")
    assert refused.status_code == 409 and "closed; its items can no longer be decided" in refused.json()["message"]
    again = call(client, opener, "post", f"/reviews/{campaign.pk}/close")
    assert again.status_code == 409 and "already closed" in again.json()["message"]
    items = call(client, otto, "get", f"/reviews/{campaign.pk}/items").json()
    assert not any(i["may_decide"] for i in items)


def test_reviewers_may_not_close_a_campaign_and_outsiders_do_not_find_it(client, campaign, otto, eve):
    refused = call(client, otto, "post", f"/reviews/{campaign.pk}/close")
    assert refused.status_code == 403 and refused.json()["code"] == "not_allowed"
    assert call(client, eve, "post", f"/reviews/{campaign.pk}/close").status_code == 404
    assert call(client, otto, "post", f"/reviews/{campaign.pk + 99}/close").status_code == 404
    assert call(client, otto, "post", "/reviews/0/close").status_code == 400
    assert AccessReview.objects.get(pk=campaign.pk).is_open


# Changing a decision -------------------------------------------------------------------------------------------


def test_a_reviewer_changes_a_decision_and_the_answer_says_what_it_replaced(client, campaign, ana, otto, marc, profile):
    assert decide(client, otto, anas(campaign, ana), "remove", "Left the on-call rota").status_code == 200
    assert not policy.may_request(ana, profile)
    changed = decide(client, marc, anas(campaign, ana), "keep", "Back on the rota")
    assert changed.status_code == 200, changed.content
    body = changed.json()
    assert (body["decision"], body["decided_by"], body["changed_from"]) == ("keep", "marc", "remove")
    assert body["earlier_decisions"].endswith("remove by otto: Left the on-call rota")
    assert body["may_decide"] is True  # still open: it may change again
    assert policy.may_request(ana, profile)
    assert AuditEvent.objects.filter(action="eligibility.reinstated", actor=marc).exists()


def test_the_person_under_review_cannot_change_the_decision_about_him(client, campaign, marc, otto):
    mine = campaign.items.get(person=marc, role="requester")
    assert decide(client, otto, mine, "remove", "Too many hats").status_code == 200
    answer = decide(client, marc, mine, "keep", "I need it, trust me")
    assert answer.status_code == 403 and "your own eligibility" in answer.json()["message"]


# Reinstating ---------------------------------------------------------------------------------------------------


def _removed_and_closed(client, campaign, person, reviewer, opener):
    item = campaign.items.get(person=person, role="requester")
    assert decide(client, reviewer, item, "remove", "Left the on-call rota").status_code == 200
    reviews.close_review(campaign.pk, actor=opener)
    return EligibilityRemoval.objects.get(item=item)


def test_an_opener_lists_and_reinstates_a_removal_and_the_person_may_request_again(
    client, campaign, opener, ana, otto, profile
):
    removal = _removed_and_closed(client, campaign, ana, otto, opener)
    listed = call(client, opener, "get", "/removals").json()
    assert any(r["id"] == removal.pk and r["person"] == "ana" and r["in_force"] for r in listed)
    answer = call(client, opener, "post", f"/removals/{removal.pk}/reinstate", {"reason": "Rejoined the rota"})
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert (body["in_force"], body["reinstated_by"], body["reinstate_reason"]) == (False, "audra", "Rejoined the rota")
    assert policy.may_request(ana, profile)
    assert all(r["id"] != removal.pk for r in call(client, opener, "get", "/removals").json())
    again = call(client, opener, "post", f"/removals/{removal.pk}/reinstate", {"reason": "Rejoined the rota"})
    assert again.status_code == 409


def test_a_removal_of_an_open_campaign_is_not_reinstated_and_a_short_reason_is_a_clear_400(
    client, campaign, opener, ana, otto
):
    assert decide(client, otto, anas(campaign, ana), "remove", "Left the on-call rota").status_code == 200
    removal = EligibilityRemoval.objects.get(person=ana)
    still_open = call(client, opener, "post", f"/removals/{removal.pk}/reinstate", {"reason": "Rejoined the rota"})
    assert still_open.status_code == 409 and "still open" in still_open.json()["message"]
    reviews.close_review(campaign.pk, actor=opener)
    short = call(client, opener, "post", f"/removals/{removal.pk}/reinstate", {"reason": "ok"})
    assert short.status_code == 400 and short.json()["field"] == "reason"
    missing = call(client, opener, "post", f"/removals/{removal.pk}/reinstate", {})
    assert missing.status_code == 400
    assert EligibilityRemoval.objects.get(pk=removal.pk).in_force


def test_nobody_reinstates_themselves_and_others_do_not_find_removals(
    client, profile, groups, opener, otto, eve, admin_user
):
    admin_user.groups.add(groups["engineers"])
    campaign = reviews.open_review(
        actor=opener, profiles=[profile], due_at=timezone.now() + datetime.timedelta(days=14)
    )
    removal = _removed_and_closed(client, campaign, admin_user, otto, opener)
    mine = call(client, admin_user, "post", f"/removals/{removal.pk}/reinstate", {"reason": "I still run it"})
    assert mine.status_code == 403 and "your own eligibility" in mine.json()["message"]
    for who in (otto, eve):
        assert call(client, who, "get", "/removals").json() == []
        assert (
            call(client, who, "post", f"/removals/{removal.pk}/reinstate", {"reason": "let me help"}).status_code == 404
        )
    assert EligibilityRemoval.objects.get(pk=removal.pk).in_force


def test_the_new_operations_are_in_the_openapi_document(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert {"/api/v1/reviews/{review_id}/close", "/api/v1/removals", "/api/v1/removals/{removal_id}/reinstate"} <= set(
        paths
    )
