"""Access reviews through the API (issue #14 part 1): list campaigns, their items, decide one, as the pages do."""

import datetime
import json

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.utils import timezone

from accounts import tokens
from audit.models import AuditEvent
from grants import policy, reviews
from grants.models import AccessReviewItem


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    # The counters live in the (local-memory) cache, which outlives a test's transaction.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def campaign(audra, profile, ana, otto):
    audra.user_permissions.add(Permission.objects.get(codename="open_accessreview"))
    opener = type(audra).objects.get(pk=audra.pk)
    return reviews.open_review(
        actor=opener, profiles=[profile], due_at=timezone.now() + datetime.timedelta(days=14), title="Quarterly"
    )


def call(client, user, method, path, body=None):
    secret = tokens.create_token(actor=user, name="test", days=30)[1]
    headers = {"Authorization": f"Bearer {secret}"}
    if method == "get":
        return client.get("/api/v1" + path, headers=headers)
    return client.post("/api/v1" + path, data=json.dumps(body), content_type="application/json", headers=headers)


def anas(campaign, ana):
    return campaign.items.get(person=ana, role="requester")


def test_a_reviewer_lists_the_campaign_and_the_items_he_may_decide(client, campaign, ana, otto):
    [listed] = call(client, otto, "get", "/reviews").json()
    assert (listed["title"], listed["items"], listed["decided"], listed["open"]) == ("Quarterly", 4, 0, True)
    items = call(client, otto, "get", f"/reviews/{campaign.pk}/items").json()
    assert {(i["person"], i["role"]) for i in items} == {
        ("ana", "requester"),
        ("marc", "requester"),
        ("marc", "approver"),
    }
    assert all(i["may_decide"] for i in items)


def test_an_auditor_sees_every_item_and_may_decide_none(client, campaign, audra):
    items = call(client, audra, "get", f"/reviews/{campaign.pk}/items").json()
    assert len(items) == 4 and not any(i["may_decide"] for i in items)


def test_a_reviewer_removes_a_person_through_the_api_and_the_portal_refuses_her_at_once(
    client, campaign, ana, otto, profile
):
    answer = call(
        client, otto, "post", f"/reviews/items/{anas(campaign, ana).pk}/decide",
        {"decision": "remove", "comment": "Left the on-call rota"},
    )  # fmt: skip
    assert answer.status_code == 200, answer.content
    assert (answer.json()["decision"], answer.json()["decided_by"]) == ("remove", "otto")
    assert not policy.may_request(ana, profile)
    assert AuditEvent.objects.filter(action="access_review.decided", actor=otto).exists()


def test_nobody_decides_about_themselves_through_the_api(client, campaign, marc):
    mine = campaign.items.get(person=marc, role="requester")
    answer = call(client, marc, "post", f"/reviews/items/{mine.pk}/decide", {"decision": "keep", "comment": "mine!"})
    assert answer.status_code == 403 and answer.json()["code"] == "not_allowed"
    assert "your own eligibility" in answer.json()["message"]


@pytest.mark.parametrize(
    "body, field",
    [({"decision": "maybe", "comment": "why not"}, "decision"), ({"decision": "keep", "comment": "ok"}, "comment")],
)
def test_a_bad_decision_is_a_clear_400(client, campaign, ana, otto, body, field):
    answer = call(client, otto, "post", f"/reviews/items/{anas(campaign, ana).pk}/decide", body)
    assert answer.status_code == 400 and answer.json()["field"] == field
    assert AccessReviewItem.objects.get(pk=anas(campaign, ana).pk).decision == ""


def test_deciding_the_same_twice_is_a_conflict(client, campaign, ana, otto, marc):
    path = f"/reviews/items/{anas(campaign, ana).pk}/decide"
    assert call(client, otto, "post", path, {"decision": "keep", "comment": "Still on call"}).status_code == 200
    again = call(client, marc, "post", path, {"decision": "keep", "comment": "Agree with otto"})
    assert again.status_code == 409 and again.json()["code"] == "conflict"


def test_outsiders_learn_nothing_of_a_campaign(client, campaign, ana, eve):
    assert call(client, eve, "get", "/reviews").json() == []
    assert call(client, eve, "get", f"/reviews/{campaign.pk}/items").status_code == 404
    answer = call(
        client, eve, "post", f"/reviews/items/{anas(campaign, ana).pk}/decide", {"decision": "keep", "comment": "fine!"}
    )
    assert answer.status_code == 404


def test_the_review_operations_are_in_the_openapi_document(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert {"/api/v1/reviews", "/api/v1/reviews/{review_id}/items", "/api/v1/reviews/items/{item_id}/decide"} <= set(
        paths
    )
