"""The JSON API under /api/v1/, for scripts, CI jobs and the `jit` command line.

Built with django-ninja rather than Django REST framework: the API is a
dozen function endpoints over our own domain functions, which is what
ninja is (plain functions, typed pydantic schemas from which the OpenAPI
document at /api/v1/openapi.json is generated, one small dependency), while
DRF's serializers, viewsets and permission classes would be a second way of
writing the rules that `grants/lifecycle.py` already owns, and DRF needs
drf-spectacular besides for an OpenAPI 3 document.

Like the pages (`grants/views.py`), every endpoint is thin: it loads
through the same access checks, calls one lifecycle function or selector,
and turns the domain errors into JSON ones. It writes nothing itself.
Callers authenticate with a personal token (`accounts/tokens.py`, checked
in `api/auth.py`) as `Authorization: Bearer jit_...`; there is no session or
cookie auth here, so there is no CSRF to worry about.

Errors are `{"code", "message", "field"?}` with a stable `code`:

| code | status | when |
| --- | --- | --- |
| invalid | 400 | input breaks a rule; `field` names it (`errors` lists all) |
| unauthorized | 401 | token missing, unknown, expired or revoked |
| not_allowed | 403 | the caller may not do this (same refusals as the pages) |
| step_up_required | 403 | a high-risk profile: approving or showing credentials needs a fresh portal sign-in (`url`) |
| not_found | 404 | no such request, or the caller may not see it |
| conflict | 409 | the request or grant is not in a state that allows this |
| rate_limited | 429 | too many bad tokens from one address, or too many requests; see Retry-After |
| unavailable | 503 | a decision needs the caller's rights refreshed from the IdP, which did not answer; try again |
"""

from __future__ import annotations

import datetime
import logging

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.http import Http404, HttpResponse
from django.urls import reverse
from ninja import NinjaAPI, Path, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError

from accounts import identity
from grants import lifecycle, policy, reviews, selectors
from grants.models import AccessProfile, AccessRequest, Delegation, Grant

from . import ratelimits
from .auth import TokenAuth
from .errors import CODES, ApiError, invalid, not_found
from .schemas import (
    CredentialsOut,
    DecisionIn,
    DelegationIn,
    DelegationOut,
    Error,
    ExtensionIn,
    ProfileOut,
    ReinstateIn,
    RemovalOut,
    RequestIn,
    RequestOut,
    ReviewDecisionIn,
    ReviewItemOut,
    ReviewOut,
)

log = logging.getLogger(__name__)

RS = AccessRequest.Status
RequestId = Path(..., ge=1, le=2**63 - 1)
# The lifecycle names form fields; the API's field for a duration is in seconds (a kind's fields keep their names).
FIELD_NAMES = {"duration": "duration_seconds"}


class _Api(NinjaAPI):
    def get_openapi_operation_id(self, operation) -> str:
        return operation.view_func.__name__  # "approve", not "grants_api_approve"


api = _Api(
    title="jitportal API",
    version="1",
    description="Just-In-Time access: request, decide, use and release access; the same rules as the portal's pages.",
    urls_namespace="api-v1",
    auth=TokenAuth(),
    openapi_url="/openapi.json",
    docs_url=None,  # Swagger UI would load scripts from a CDN; the document itself is enough
)


def _json_error(request, exc: ApiError):
    body = {"code": exc.code, "message": exc.message}
    if exc.field:
        body["field"] = exc.field
    if exc.errors:
        body["errors"] = exc.errors
    response = api.create_response(request, body, status=exc.status)
    for name, value in exc.headers.items():
        response[name] = value
    if exc.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="jitportal"'
    return response


@api.exception_handler(ApiError)
def _on_api_error(request, exc):
    return _json_error(request, exc)


@api.exception_handler(lifecycle.InvalidRequestError)
def _on_invalid(request, exc):
    return _json_error(request, invalid([(FIELD_NAMES.get(f, f), m) for f, m in exc.errors.items()]))


@api.exception_handler(lifecycle.StepUpRequiredError)
def _on_step_up(request, exc):
    return _json_error(request, ApiError(403, "step_up_required", str(exc)))


@api.exception_handler(lifecycle.NotAllowedError)
def _on_not_allowed(request, exc):
    return _json_error(request, ApiError(403, "not_allowed", str(exc)))


@api.exception_handler(lifecycle.TransitionError)
def _on_transition(request, exc):
    return _json_error(request, ApiError(409, "conflict", str(exc)))


@api.exception_handler(ValidationError)
def _on_validation(request, exc):
    errors = []
    for error in exc.errors:
        names = [str(part) for part in error.get("loc", ()) if part not in ("body", "payload", "path", "query")]
        field = names[0] if names else None
        message = error.get("msg", "Invalid value.")
        errors.append((field, f"{field}: {message}" if field else message))
    return _json_error(request, invalid(errors or [(None, "The request body is not valid JSON.")]))


@api.exception_handler(AuthenticationError)
def _on_unauthenticated(request, exc):
    return _json_error(
        request, ApiError(401, "unauthorized", "Send your API token as 'Authorization: Bearer <token>'.")
    )


@api.exception_handler(Http404)
def _on_404(request, exc):
    return _json_error(request, ApiError(404, "not_found", "Not found."))


@api.exception_handler(ObjectDoesNotExist)
def _on_does_not_exist(request, exc):
    return _json_error(request, ApiError(404, "not_found", "Not found."))


@api.exception_handler(HttpError)
def _on_http_error(request, exc):
    return _json_error(request, ApiError(exc.status_code, CODES.get(exc.status_code, "error"), str(exc)))


@api.exception_handler(Exception)
def _on_crash(request, exc):
    log.exception("API error on %s %s", request.method, request.path)
    return _json_error(
        request, ApiError(500, "server_error", "Something went wrong in the portal; the error is logged.")
    )


# Reading ---------------------------------------------------------------------

ERRORS = {400: Error, 401: Error, 403: Error, 404: Error, 409: Error, 429: Error, 503: Error}


def _seconds(delta: datetime.timedelta) -> int:
    return int(delta.total_seconds())


def _grant_out(grant: Grant | None) -> dict | None:
    if grant is None:
        return None
    return {
        "id": grant.pk,
        "status": grant.status,
        "is_active": grant.is_active,
        "starts_at": grant.starts_at,
        "expires_at": grant.expires_at,
        "end_reason": grant.end_reason,
        "credentials_available": grant.credentials_available,
        "last_error": grant.last_error,
    }


def _portal_url(access_request) -> str:
    return settings.PORTAL_URL.rstrip("/") + reverse("grants:request_detail", args=[access_request.pk])


def _request_out(access_request: AccessRequest) -> dict:
    waiting = policy.waiting_for(access_request) if access_request.status == RS.PENDING else None
    return {
        "id": access_request.pk,
        "status": access_request.status,
        "profile": access_request.profile.name,
        "profile_title": access_request.profile.title,
        "target": access_request.profile.target.name,
        "requester": access_request.requester.username,
        "scope": access_request.effective_scope,
        "duration_seconds": _seconds(access_request.duration),
        "justification": access_request.justification,
        "ticket": access_request.ticket,
        "starts_at": access_request.starts_at,
        "created_at": access_request.created_at,
        "decided_at": access_request.decided_at,
        "decided_by": access_request.decided_by.username if access_request.decided_by_id else None,
        "decision_comment": access_request.decision_comment,
        "auto_rule": access_request.auto_rule,
        "break_glass": access_request.break_glass,
        "extends": access_request.extends_id,
        "step": policy.current_step(access_request) + 1,
        "steps": len(policy.steps_for(access_request.profile)),
        "waiting_for": waiting,
        "reviewers": access_request.reviewers,
        "on_call": [
            {"user": a.user.username, "schedule": a.schedule, "why": a.why, "fallback": a.fallback}
            for a in selectors.on_call_asked(access_request)
        ],
        "approvals": [
            {
                "approver": a.approver.username,
                "on_behalf_of": a.on_behalf_of.username if a.on_behalf_of_id else None,
                "step": a.step + 1,
                "comment": a.comment,
                "created_at": a.created_at,
            }
            for a in selectors.approvals_of(access_request)
        ],
        "grant": _grant_out(selectors.grant_of(access_request)),
        "url": _portal_url(access_request),
    }


def _load(pk) -> AccessRequest | None:
    return (
        AccessRequest.objects.select_related(
            "profile__target", "profile__policy", "profile__approver_group", "requester", "decided_by"
        )
        .filter(pk=pk)
        .first()
    )


def _request_for_viewer(request, pk) -> AccessRequest:
    access_request = selectors.request_for_viewer(request.auth, pk)
    if access_request is None:
        raise not_found(pk)
    return access_request


def _grant_for_viewer(request, pk) -> Grant:
    access_request = _request_for_viewer(request, pk)
    grant = selectors.grant_of(access_request)
    if grant is None:
        raise ApiError(
            409, "conflict", f"Request #{pk} is {access_request.get_status_display().lower()} and has no access yet."
        )
    return grant


@api.get("/profiles", response={200: list[ProfileOut], **ERRORS}, summary="Profiles you may request")
def list_profiles(request):
    profiles = selectors.requestable_profiles(request.auth).select_related("policy", "approver_group")
    return [
        {
            "name": p.name,
            "title": p.title,
            "description": p.description,
            "target": p.target.name,
            "kind": p.target.kind,
            "default_duration_seconds": _seconds(p.default_duration),
            "max_duration_seconds": _seconds(p.max_duration),
            "risk": p.risk,
            "approvers": "; then ".join(s.describe() for s in policy.steps_for(p)),
            "request_fields": list(selectors.request_fields([p.target.kind])),
        }
        for p in profiles
    ]


@api.get("/requests", response={200: list[RequestOut], **ERRORS}, summary="Your latest requests")
def list_requests(request):
    return [_request_out(r) for r in selectors.own_requests(request.auth)]


@api.get(
    "/requests/{request_id}", response={200: RequestOut, **ERRORS}, summary="One request, its approvals and its grant"
)
def get_request(request, request_id: int = RequestId):
    return _request_out(_request_for_viewer(request, request_id))


@api.get("/inbox", response={200: list[RequestOut], **ERRORS}, summary="Requests you may decide now")
def inbox(request):
    return [_request_out(r) for r in selectors.requests_awaiting(request.auth)]


# Acting ----------------------------------------------------------------------


@api.post("/requests", response={201: RequestOut, **ERRORS}, summary="Ask for access")
def create_request(request, payload: RequestIn):
    user = request.auth
    ratelimits.count_new_request(user)
    # Any existing profile is looked up, so that the lifecycle (not the API)
    # refuses one the caller may not request, and records the attempt.
    profile = AccessProfile.objects.select_related("target", "policy").filter(name=payload.profile).first()
    if profile is None:
        raise ApiError(
            400,
            "invalid",
            f"There is no access profile named {payload.profile!r}; GET /api/v1/profiles lists yours.",
            field="profile",
        )
    # The target kind's request fields are top-level fields of the payload, named by its connector.
    params, errors = payload.kind_params(profile.target.kind)
    if errors:
        raise invalid(errors)
    created = lifecycle.submit_request(
        requester=user,
        profile=profile,
        duration=datetime.timedelta(seconds=payload.duration_seconds),
        justification=payload.justification,
        ticket=payload.ticket,
        starts_at=payload.starts_at,
        params=params,
        reviewers=payload.reviewers,
    )
    return Status(201, _request_out(_load(created.pk)))


def _decide(request, request_id: int, payload: DecisionIn | None, decide, **channel) -> dict:
    access_request = _load(request_id)
    if access_request is None:
        raise not_found(request_id)
    try:
        # A token outlives group changes at the IdP: decide with rights read from it recently.
        actor = identity.ensure_recent_identity(request.auth)
    except identity.IdentityError as exc:
        status, code = (503, "unavailable") if exc.temporary else (403, "not_allowed")
        raise ApiError(status, code, f"Nothing was decided: {exc}") from None
    try:
        decide(access_request.pk, actor=actor, comment=payload.comment if payload else "", **channel)
    except lifecycle.StepUpRequiredError as exc:
        raise ApiError(403, "step_up_required", f"{exc} Open {_portal_url(access_request)}") from None
    except lifecycle.NotAllowedError as exc:
        # The lifecycle has recorded the attempt; outsiders still learn nothing about the request.
        if not selectors.may_view_request(actor, access_request):
            raise not_found(request_id) from None
        raise ApiError(403, "not_allowed", str(exc)) from None
    except lifecycle.TransitionError:
        access_request.refresh_from_db()
        if access_request.status != RS.PENDING:
            raise ApiError(
                409,
                "conflict",
                f"Request #{request_id} is already {access_request.get_status_display().lower()}; nothing changed.",
            ) from None
        raise
    return _request_out(_load(request_id))


@api.post(
    "/requests/{request_id}/approve", response={200: RequestOut, **ERRORS}, summary="Approve the step you may decide"
)
def approve(request, request_id: int = RequestId, payload: DecisionIn | None = None):
    return _decide(request, request_id, payload, lifecycle.approve_request, channel="api")


@api.post("/requests/{request_id}/deny", response={200: RequestOut, **ERRORS}, summary="Deny a request")
def deny(request, request_id: int = RequestId, payload: DecisionIn | None = None):
    return _decide(request, request_id, payload, lifecycle.deny_request)


@api.post(
    "/requests/{request_id}/cancel", response={200: RequestOut, **ERRORS}, summary="Withdraw your pending request"
)
def cancel(request, request_id: int = RequestId):
    access_request = _request_for_viewer(request, request_id)
    try:
        lifecycle.cancel_request(access_request.pk, actor=request.auth)
    except lifecycle.TransitionError:
        raise ApiError(409, "conflict", f"Request #{request_id} is no longer pending; nothing changed.") from None
    return _request_out(_load(request_id))


@api.post("/requests/{request_id}/release", response={200: RequestOut, **ERRORS}, summary="End your access now")
def release(request, request_id: int = RequestId):
    grant = _grant_for_viewer(request, request_id)
    try:
        lifecycle.revoke_grant(grant.pk, actor=request.auth, reason=Grant.EndReason.RELEASED)
    except lifecycle.TransitionError:
        raise ApiError(409, "conflict", "This access is already ending or ended; nothing changed.") from None
    return _request_out(_load(request_id))


@api.post(
    "/requests/{request_id}/extend",
    response={201: RequestOut, **ERRORS},
    summary="Ask for more time on your active access",
)
def extend(request, payload: ExtensionIn, request_id: int = RequestId):
    grant = _grant_for_viewer(request, request_id)
    extension = lifecycle.request_extension(
        grant.pk,
        actor=request.auth,
        duration=datetime.timedelta(seconds=payload.duration_seconds),
        justification=payload.justification,
    )
    return Status(201, _request_out(_load(extension.pk)))


@api.get(
    "/requests/{request_id}/credentials", response={200: CredentialsOut, **ERRORS}, summary="Your credentials, once"
)
def credentials(request, response: HttpResponse, request_id: int = RequestId):
    # Like the credentials page: no copy in any cache on the way.
    response["Cache-Control"] = "no-store"
    grant = _grant_for_viewer(request, request_id)
    if grant.status == Grant.Status.SCHEDULED:
        raise ApiError(409, "conflict", "The access is still being set up on the target; try again in a few seconds.")
    try:
        revealed = lifecycle.reveal_credentials(grant.pk, actor=request.auth, channel="api")
    except lifecycle.StepUpRequiredError as exc:
        portal = settings.PORTAL_URL.rstrip("/") + reverse("grants:my_access")
        raise ApiError(403, "step_up_required", f"{exc} Show them at {portal}") from None
    return {
        "request": request_id,
        "grant": grant.pk,
        "kind": grant.profile.target.kind,
        "expires_at": grant.expires_at,
        "credentials": {str(k): str(v) for k, v in revealed.items()},
    }


def _delegation_out(d) -> dict:
    return {
        "id": d.pk,
        "delegator": d.delegator.username,
        "delegate": d.delegate.username,
        "starts_at": d.starts_at,
        "ends_at": d.ends_at,
        "reason": d.reason,
    }


@api.get(
    "/delegations",
    response={200: list[DelegationOut], **ERRORS},
    summary="Delegations you gave or received that have not ended",
)
def list_delegations(request):
    given, received = selectors.delegations_of(request.auth)
    return [_delegation_out(d) for d in given + received]


@api.post(
    "/delegations", response={201: DelegationOut, **ERRORS}, summary="Name a delegate who decides for you for a period"
)
def create_delegation(request, payload: DelegationIn):
    delegation = lifecycle.delegate_approvals(
        actor=request.auth,
        delegate=selectors.active_user(payload.delegate),
        starts_at=payload.starts_at,
        ends_at=payload.ends_at,
        reason=payload.reason,
    )
    return Status(201, _delegation_out(delegation))


@api.post(
    "/delegations/{delegation_id}/end", response={200: DelegationOut, **ERRORS}, summary="End your delegation now"
)
def end_delegation(request, delegation_id: int):
    delegation = Delegation.objects.filter(pk=delegation_id, delegator=request.auth).first()
    if delegation is None:
        raise ApiError(404, "not_found", f"There is no delegation #{delegation_id} of yours.")
    try:
        delegation = lifecycle.end_delegation(delegation.pk, actor=request.auth)
    except lifecycle.TransitionError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return _delegation_out(delegation)


# Access reviews ----------------------------------------------------------------


def _review_out(review) -> dict:
    return {
        "id": review.pk,
        "title": review.title,
        "opened_at": review.opened_at,
        "opened_by": review.opened_by.username if review.opened_by_id else None,
        "due_at": review.due_at,
        "undecided": review.undecided,
        "open": review.is_open,
        "closed_at": review.closed_at,
        "closed_by": review.closed_by.username if review.closed_by_id else None,
        "items": review.total,
        "decided": review.decided,
        "url": settings.PORTAL_URL.rstrip("/") + reverse("audit:review", args=[review.pk]),
    }


def _item_out(item, *, may_decide: bool) -> dict:
    return {
        "id": item.pk,
        "review": item.review_id,
        "profile": item.profile.name,
        "person": item.person.username,
        "role": item.role,
        "via": item.via,
        "grants": item.grants,
        "hours": item.hours,
        "last_used_at": item.last_used_at,
        "break_glass": item.break_glass,
        "decisions": item.decisions,
        "decision": item.decision,
        "decided_by": item.decided_by.username if item.decided_by_id else None,
        "decided_at": item.decided_at,
        "comment": item.comment,
        "by_rule": item.by_rule,
        "changed_from": item.changed_from,
        "earlier_decisions": item.earlier_decisions,
        "may_decide": may_decide and item.review.is_open,
    }


def _visible_review(user, review_id: int):
    review = selectors.review_of(review_id)
    if review is None or not selectors.may_view_review(user, review):
        raise ApiError(404, "not_found", f"There is no access review #{review_id} for you.")
    return review


@api.get("/reviews", response={200: list[ReviewOut], **ERRORS}, summary="Access reviews you review or audit")
def list_reviews(request):
    return [_review_out(r) for r in selectors.reviews_for(request.auth)]


@api.get(
    "/reviews/{review_id}/items",
    response={200: list[ReviewItemOut], **ERRORS},
    summary="A campaign's items: all of them for auditors, yours to decide for reviewers",
)
def list_review_items(request, review_id: int = RequestId):
    review = _visible_review(request.auth, review_id)
    mine = selectors.items_for_reviewer(request.auth, review)
    ids = {item.pk for item in mine}
    items = selectors.review_items(review) if selectors.sees_all_reviews(request.auth) else mine
    return [_item_out(item, may_decide=item.pk in ids) for item in items]


@api.post(
    "/reviews/items/{item_id}/decide",
    response={200: ReviewItemOut, **ERRORS},
    summary="Keep or remove one person's eligibility, with a comment",
)
def decide_review_item(request, payload: ReviewDecisionIn, item_id: int = RequestId):
    item = selectors.review_item_of(item_id)
    if item is None or not selectors.may_view_review(request.auth, item.review):
        raise ApiError(404, "not_found", f"There is no access review item #{item_id} for you.")
    try:
        # A token outlives group changes at the IdP: decide with rights read from it recently.
        actor = identity.ensure_recent_identity(request.auth)
    except identity.IdentityError as exc:
        status, code = (503, "unavailable") if exc.temporary else (403, "not_allowed")
        raise ApiError(status, code, f"Nothing was decided: {exc}") from None
    decided = reviews.decide_item(item.pk, actor=actor, decision=payload.decision, comment=payload.comment)
    return _item_out(selectors.review_item_of(decided.pk), may_decide=True)


def _recent_actor(user, nothing: str):
    try:
        # A token outlives group changes at the IdP: act with rights read from it recently.
        return identity.ensure_recent_identity(user)
    except identity.IdentityError as exc:
        status, code = (503, "unavailable") if exc.temporary else (403, "not_allowed")
        raise ApiError(status, code, f"{nothing}: {exc}") from None


@api.post(
    "/reviews/{review_id}/close",
    response={200: ReviewOut, **ERRORS},
    summary="Close a campaign before its due date: undecided items follow its rule",
)
def close_review(request, review_id: int = RequestId):
    review = _visible_review(request.auth, review_id)
    actor = _recent_actor(request.auth, "Nothing was closed")
    reviews.close_review(review.pk, actor=actor)
    return _review_out(selectors.review_of(review.pk))


def _removal_out(removal) -> dict:
    return {
        "id": removal.pk,
        "person": removal.person.username,
        "profile": removal.profile.name,
        "role": removal.role,
        "review": removal.item.review_id if removal.item_id else None,
        "created_at": removal.created_at,
        "in_force": removal.in_force,
        "reinstated_at": removal.reinstated_at,
        "reinstated_by": removal.reinstated_by.username if removal.reinstated_by_id else None,
        "reinstate_reason": removal.reinstate_reason,
    }


@api.get(
    "/removals",
    response={200: list[RemovalOut], **ERRORS},
    summary="Removals by access reviews that the portal enforces now (auditors and openers of campaigns)",
)
def list_removals(request):
    if not selectors.sees_all_reviews(request.auth):
        return []
    return [_removal_out(r) for r in selectors.removals_in_force()]


@api.post(
    "/removals/{removal_id}/reinstate",
    response={200: RemovalOut, **ERRORS},
    summary="Reinstate a removal after its campaign closed, with a reason",
)
def reinstate_removal(request, payload: ReinstateIn, removal_id: int = RequestId):
    removal = selectors.removal_or_none(removal_id)
    if removal is None or not selectors.sees_all_reviews(request.auth):
        raise ApiError(404, "not_found", f"There is no removal #{removal_id} for you.")
    actor = _recent_actor(request.auth, "Nothing was reinstated")
    reviews.reinstate_eligibility(removal.pk, actor=actor, reason=payload.reason)
    return _removal_out(selectors.removal_of(removal.pk))
