"""The JSON API at /api/v1/: tokens, every endpoint, and the same refusals as the pages.

A feature's own calls are in its feature file's API section: extending (grants/tests/test_extensions.py),
scheduled windows (test_windows.py), credentials (test_credentials.py). The client is support.py's.
"""

import ast
import datetime
import json
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from accounts import tokens
from accounts.models import ApiToken
from audit.models import AuditEvent
from grants import lifecycle
from grants.models import AccessRequest, Grant

from .conftest import JUSTIFICATION
from .support import refusals

RS, GS = AccessRequest.Status, Grant.Status
# The rate limits' counters live in the (local-memory) cache, which outlives a test's transaction.
pytestmark = pytest.mark.usefixtures("fresh_rate_limits")


def new_request(**overrides):
    return {
        "profile": "appdb-readonly",
        "duration_seconds": 1800,
        "justification": JUSTIFICATION,
        "ticket": "INC-4711",
        **overrides,
    }


@pytest.fixture
def audra(django_user_model, groups):
    """An auditor: may view every request, decides none."""
    user = django_user_model.objects.create_user("audra", "audra@example.com", "audra-password-123")
    user.user_permissions.add(Permission.objects.get(codename="view_accessrequest"))
    user.groups.add(groups["auditors"])
    return user


# Authentication ----------------------------------------------------------------


def test_a_call_without_a_token_is_unauthorized(api, db):
    response = api().get("/profiles")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert "Bearer" in response.json()["message"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_an_unknown_token_is_unauthorized(api, db):
    response = api(secret="jit_" + "x" * 43).get("/profiles")
    assert response.status_code == 401
    assert response.json() == {"code": "unauthorized", "message": "Unknown API token."}


def test_a_basic_auth_header_is_unauthorized(client, db):
    response = client.get("/api/v1/profiles", headers={"Authorization": "Basic YW5hOmFuYQ=="})
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


def test_an_expired_token_is_unauthorized(api, ana):
    token, secret = tokens.create_token(actor=ana, name="old", days=1)
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - datetime.timedelta(seconds=1))
    response = api(secret=secret).get("/profiles")
    assert response.status_code == 401
    assert "expired" in response.json()["message"]


def test_a_revoked_token_is_unauthorized(api, ana):
    token, secret = tokens.create_token(actor=ana, name="ci", days=1)
    assert api(secret=secret).get("/profiles").status_code == 200
    tokens.revoke_token(token.pk, actor=ana)
    response = api(secret=secret).get("/profiles")
    assert response.status_code == 401
    assert response.json()["message"] == "This API token was revoked."


def test_the_token_of_a_disabled_account_is_unauthorized(api, ana):
    caller = api(ana)
    ana.is_active = False
    ana.save(update_fields=["is_active"])
    assert caller.get("/profiles").status_code == 401


def test_a_used_token_records_when(api, ana):
    caller = api(ana)
    assert ApiToken.objects.get(user=ana).last_used_at is None
    caller.get("/profiles")
    assert ApiToken.objects.get(user=ana).last_used_at is not None


def test_bad_tokens_from_one_address_are_rate_limited_with_retry_after(api, ana, settings):
    settings.JIT_API_AUTH_FAILURES_PER_MINUTE = 3
    guesser = api(secret="jit_guess")
    assert [guesser.get("/profiles").status_code for _ in range(3)] == [401, 401, 401]
    response = guesser.get("/profiles")
    assert response.status_code == 429
    assert response.json()["code"] == "rate_limited"
    assert 1 <= int(response["Retry-After"]) <= 60
    # While locked out no token is checked at all, a good one included ...
    assert api(ana).get("/profiles").status_code == 429
    # ... but only for that address.
    assert api(ana, REMOTE_ADDR="10.1.2.3").get("/profiles").status_code == 200


def test_behind_a_proxy_the_client_address_comes_from_the_configured_header(api, ana, settings):
    settings.JIT_API_AUTH_FAILURES_PER_MINUTE = 1
    settings.JIT_CLIENT_IP_HEADER = "X-Forwarded-For"
    assert api(secret="jit_guess", HTTP_X_FORWARDED_FOR="spoofed, 10.0.0.7").get("/profiles").status_code == 401
    assert api(secret="jit_guess", HTTP_X_FORWARDED_FOR="10.0.0.7").get("/profiles").status_code == 429
    # The same proxy address, another client behind it.
    assert api(ana, HTTP_X_FORWARDED_FOR="10.0.0.8").get("/profiles").status_code == 200


# Profiles --------------------------------------------------------------------------


def test_profiles_lists_what_the_caller_may_request_with_max_durations(api, ana, eve, profile):
    response = api(ana).get("/profiles")
    assert response.status_code == 200
    [item] = response.json()
    assert item["name"] == "appdb-readonly"
    assert item["max_duration_seconds"] == 4 * 3600
    assert item["default_duration_seconds"] == 3600
    assert item["target"] == "appdb-cluster" and item["kind"] == "postgres"
    assert item["approvers"] == "a member of db-approvers"
    assert api(eve).get("/profiles").json() == []


# Creating requests -------------------------------------------------------------------


def test_requester_creates_a_request(api, ana, profile):
    response = api(ana).post("/requests", new_request())
    assert response.status_code == 201
    body = response.json()
    req = AccessRequest.objects.get(pk=body["id"])
    assert req.requester == ana and req.status == RS.PENDING
    assert body["status"] == "pending"
    assert body["duration_seconds"] == 1800
    assert body["requester"] == "ana"
    assert body["waiting_for"] == "step 1 of 1: a member of db-approvers"
    assert body["grant"] is None
    assert body["url"].endswith(f"/access/requests/{req.pk}/")
    assert AuditEvent.objects.filter(action="request.submitted", object_id=str(req.pk), actor=ana).exists()


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"justification": "because"}, "justification", "Say why you need access in at least 20 characters."),
        ({"duration_seconds": 5 * 3600}, "duration_seconds", "The longest this profile allows is 4 h."),
        ({"duration_seconds": 0}, "duration_seconds", "duration_seconds: Input should be greater than or equal to 1"),
        ({"ticket": "T" * 101}, "ticket", "A ticket reference has at most 100 characters."),
        (
            {"profile": "no-such-profile"},
            "profile",
            "There is no access profile named 'no-such-profile'; GET /api/v1/profiles lists yours.",
        ),
        (
            {"starts_at": "2001-01-01T00:00:00Z"},
            "starts_at",
            "The window's start is in the past; leave it empty to start as soon as approved.",
        ),
        (
            {"justification": JUSTIFICATION + "\x00"},
            "justification",
            "justification: Value error, Null characters are not allowed.",
        ),
    ],
)
def test_invalid_input_is_refused_naming_the_field(api, ana, profile, overrides, field, message):
    response = api(ana).post("/requests", new_request(**overrides))
    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["field"], body["message"]) == ("invalid", field, message)
    assert not AccessRequest.objects.exists()


def test_a_missing_field_is_named(api, ana, profile):
    body = new_request()
    del body["justification"]
    response = api(ana).post("/requests", body)
    assert response.status_code == 400
    assert response.json()["field"] == "justification"


def test_a_body_that_is_not_json_is_invalid(client, ana, profile):
    secret = tokens.create_token(actor=ana, name="t", days=1)[1]
    response = client.post(
        "/api/v1/requests",
        data="{not json",
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


def test_a_second_pending_request_for_the_same_profile_is_invalid(api, ana, pending_request):
    response = api(ana).post("/requests", new_request())
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and "field" not in body
    assert body["message"] == "You already have a pending request for appdb read-only."


def test_outsider_may_not_request_the_profile_and_the_attempt_is_audited(api, eve, profile):
    response = api(eve).post("/requests", new_request())
    assert response.status_code == 403
    assert response.json() == {"code": "not_allowed", "message": "You may not request this access profile."}
    assert refusals("request.refused") == 1


def test_request_creation_is_rate_limited_per_user(api, ana, marc, profile, rw_profile, settings):
    settings.JIT_API_REQUESTS_PER_HOUR = 2
    caller = api(ana)
    assert caller.post("/requests", new_request()).status_code == 201
    assert caller.post("/requests", new_request(profile="appdb-readwrite")).status_code == 201
    response = caller.post("/requests", new_request(profile="appdb-readwrite"))
    assert response.status_code == 429
    assert response.json()["code"] == "rate_limited"
    assert 1 <= int(response["Retry-After"]) <= 3600
    # Another user has their own budget.
    assert api(marc).post("/requests", new_request()).status_code == 201


# Reading a request -------------------------------------------------------------------


def test_requester_approver_and_auditor_see_a_request_and_an_outsider_gets_404(
    api, ana, otto, audra, eve, pending_request
):
    path = f"/requests/{pending_request.pk}"
    for user in (ana, otto, audra):
        response = api(user).get(path)
        assert response.status_code == 200, user
        assert response.json()["id"] == pending_request.pk
    response = api(eve).get(path)
    assert response.status_code == 404
    assert response.json() == {
        "code": "not_found",
        "message": f"There is no request #{pending_request.pk} that you may see.",
    }
    # Exactly as for a request that does not exist.
    assert api(eve).get("/requests/999999").json()["message"] == "There is no request #999999 that you may see."


def test_a_request_shows_its_approvals_and_its_grant_with_expiry(api, ana, active_grant):
    body = api(ana).get(f"/requests/{active_grant.request_id}").json()
    assert body["status"] == "approved"
    assert body["decided_by"] == "otto"
    assert body["approvals"] == [
        {
            "approver": "otto",
            "on_behalf_of": None,
            "step": 1,
            "comment": "ok",
            "created_at": body["approvals"][0]["created_at"],
        }
    ]
    grant = body["grant"]
    assert grant["id"] == active_grant.pk
    assert grant["status"] == "active" and grant["is_active"] is True
    assert abs(datetime.datetime.fromisoformat(grant["expires_at"]) - active_grant.expires_at) < datetime.timedelta(
        milliseconds=1
    )
    assert grant["credentials_available"] is True


def test_own_requests_are_listed(api, ana, otto, pending_request):
    assert [r["id"] for r in api(ana).get("/requests").json()] == [pending_request.pk]
    assert api(otto).get("/requests").json() == []


def test_ids_out_of_range_are_invalid_not_a_crash(api, ana, db):
    assert api(ana).get("/requests/0").status_code == 400
    assert api(ana).get(f"/requests/{2**70}").status_code == 400
    assert api(ana).get("/requests/abc").status_code == 400


# Deciding ----------------------------------------------------------------------------


def test_approver_approves_and_the_grant_is_scheduled(api, otto, pending_request, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = api(otto).post(f"/requests/{pending_request.pk}/approve", {"comment": "go ahead"})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "approved"
    assert body["decision_comment"] == "go ahead"
    assert body["grant"]["status"] == "scheduled"
    assert Grant.objects.filter(request=pending_request, status=GS.SCHEDULED).exists()
    assert callbacks, "provisioning is enqueued after commit"


def test_approve_needs_no_body(api, otto, pending_request):
    response = api(otto).post(f"/requests/{pending_request.pk}/approve")
    assert response.status_code == 200
    assert response.json()["status"] == "approved"


def test_approver_denies_with_a_comment(api, otto, pending_request):
    response = api(otto).post(f"/requests/{pending_request.pk}/deny", {"comment": "use the replica"})
    assert response.status_code == 200
    assert response.json()["status"] == "denied"
    assert AccessRequest.objects.get(pk=pending_request.pk).decision_comment == "use the replica"


def test_requester_cannot_approve_own_request(api, ana, pending_request):
    response = api(ana).post(f"/requests/{pending_request.pk}/approve")
    assert response.status_code == 403
    assert response.json() == {"code": "not_allowed", "message": "You cannot decide your own request."}
    assert refusals("request.decision_refused") == 1
    assert AccessRequest.objects.get(pk=pending_request.pk).status == RS.PENDING


def test_auditor_may_see_but_not_decide(api, audra, pending_request):
    response = api(audra).post(f"/requests/{pending_request.pk}/approve")
    assert response.status_code == 403
    assert response.json()["message"] == "You are not an approver for this request."


def test_outsider_deciding_gets_404_and_the_attempt_is_audited(api, eve, pending_request):
    for action in ("approve", "deny"):
        response = api(eve).post(f"/requests/{pending_request.pk}/{action}")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    assert refusals("request.decision_refused") == 2
    assert api(eve).post("/requests/999999/approve").status_code == 404


def test_deciding_an_already_decided_request_is_a_conflict(api, marc, approved_request):
    for action in ("approve", "deny"):
        response = api(marc).post(f"/requests/{approved_request.pk}/{action}")
        assert response.status_code == 409
        assert response.json() == {
            "code": "conflict",
            "message": f"Request #{approved_request.pk} is already approved; nothing changed.",
        }


def test_a_comment_over_2000_characters_is_invalid(api, otto, pending_request):
    response = api(otto).post(f"/requests/{pending_request.pk}/approve", {"comment": "x" * 2001})
    assert response.status_code == 400
    assert response.json()["field"] == "comment"
    assert AccessRequest.objects.get(pk=pending_request.pk).status == RS.PENDING


# Cancelling, releasing -----------------------------------------------------------------


def test_requester_cancels_a_pending_request_once(api, ana, pending_request):
    response = api(ana).post(f"/requests/{pending_request.pk}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    again = api(ana).post(f"/requests/{pending_request.pk}/cancel")
    assert again.status_code == 409
    assert again.json()["code"] == "conflict"


def test_only_the_requester_cancels(api, otto, eve, pending_request):
    response = api(otto).post(f"/requests/{pending_request.pk}/cancel")
    assert response.status_code == 403
    assert response.json() == {"code": "not_allowed", "message": "Only the requester can cancel a request."}
    assert api(eve).post(f"/requests/{pending_request.pk}/cancel").status_code == 404


def test_holder_releases_the_grant(api, ana, active_grant, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = api(ana).post(f"/requests/{active_grant.request_id}/release")
    assert response.status_code == 200
    grant = Grant.objects.get(pk=active_grant.pk)
    assert (grant.status, grant.end_reason, grant.ended_by) == (GS.REVOKING, "released", ana)
    assert response.json()["grant"]["status"] == "revoking"
    assert response.json()["grant"]["end_reason"] == "released"
    assert callbacks, "the revocation is enqueued after commit"
    again = api(ana).post(f"/requests/{active_grant.request_id}/release")
    assert again.status_code == 409


def test_only_the_holder_releases(api, otto, eve, active_grant):
    response = api(otto).post(f"/requests/{active_grant.request_id}/release")
    assert response.status_code == 403
    assert response.json() == {"code": "not_allowed", "message": "Only the holder can release a grant."}
    assert refusals("grant.revoke_refused") == 1
    assert api(eve).post(f"/requests/{active_grant.request_id}/release").status_code == 404
    assert Grant.objects.get(pk=active_grant.pk).status == GS.ACTIVE


def test_releasing_a_request_without_a_grant_is_a_conflict(api, ana, pending_request):
    response = api(ana).post(f"/requests/{pending_request.pk}/release")
    assert response.status_code == 409
    assert response.json()["message"] == f"Request #{pending_request.pk} is pending and has no access yet."


# The inbox -------------------------------------------------------------------------------


def test_inbox_lists_what_the_caller_may_decide_now(api, ana, otto, eve, pending_request):
    [item] = api(otto).get("/inbox").json()
    assert item["id"] == pending_request.pk
    assert item["justification"] == JUSTIFICATION
    assert api(ana).get("/inbox").json() == []
    assert api(eve).get("/inbox").json() == []
    lifecycle.approve_request(pending_request.pk, actor=otto)
    assert api(otto).get("/inbox").json() == []


# The document and the code ---------------------------------------------------------------


def test_openapi_document_is_valid_json_listing_every_path(client, db):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = json.loads(response.content)
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/api/v1/profiles",
        "/api/v1/requests",
        "/api/v1/requests/{request_id}",
        "/api/v1/requests/{request_id}/approve",
        "/api/v1/requests/{request_id}/deny",
        "/api/v1/requests/{request_id}/cancel",
        "/api/v1/requests/{request_id}/release",
        "/api/v1/requests/{request_id}/extend",
        "/api/v1/requests/{request_id}/credentials",
        "/api/v1/inbox",
        "/api/v1/delegations",
        "/api/v1/delegations/{delegation_id}/end",
        "/api/v1/reviews",
        "/api/v1/reviews/{review_id}/items",
        "/api/v1/reviews/items/{item_id}/decide",
        "/api/v1/reviews/{review_id}/close",
        "/api/v1/removals",
        "/api/v1/removals/{removal_id}/reinstate",
    }
    assert document["components"]["securitySchemes"] == {"TokenAuth": {"type": "http", "scheme": "bearer"}}
    assert set(document["paths"]["/api/v1/requests"]["post"]["responses"]) >= {"201", "400", "401", "403", "429"}


def test_the_api_writes_nothing_itself():
    """Every change goes through the lifecycle (or accounts.tokens), as on the pages."""
    writes = {"save", "create", "update", "delete", "bulk_create", "bulk_update", "get_or_create", "update_or_create"}
    sources = sorted((Path(__file__).resolve().parents[1]).glob("*.py"))
    assert Path(__file__).resolve().parents[1] / "views.py" in sources
    called = {
        node.func.attr
        for source in sources
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert called & writes == set()
