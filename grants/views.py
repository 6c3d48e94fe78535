"""Pages of the request journey. Thin: load with an access check, validate, call the lifecycle, redirect."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import dateformat, timezone
from django.utils.text import capfirst
from django.views.decorators.http import require_GET, require_POST

from accounts import stepup, timezones
from audit.sinks import sink_status

from . import lifecycle, policy, selectors
from .durations import format_duration
from .forms import DecisionForm, DelegationForm, ExtensionForm, RequestForm, ReviewForm, usernames
from .models import AccessRequest, BreakGlassReview, Delegation, Grant
from .tables import PastGrantTable, RequestTable

RS = AccessRequest.Status


def _get_request_for_viewer(request, pk) -> AccessRequest:
    access_request = selectors.request_for_viewer(request.user, pk)
    if access_request is None:
        raise Http404
    return access_request


def _get_grant_for_viewer(request, pk) -> Grant:
    grant = selectors.grant_for_viewer(request.user, pk)
    if grant is None:
        raise Http404
    return grant


def _when(value) -> str:
    return dateformat.format(timezone.localtime(value), "Y-m-d H:i:s T")


def _ids(requests) -> str:
    ids = [f"#{r.pk}" for r in requests]
    return ids[0] if len(ids) == 1 else f"{', '.join(ids[:-1])} and {ids[-1]}"


def _with_workflow(access_request) -> AccessRequest:
    """Attach what deciders and requesters read: the current step, approvals so far, the rest of a bundle."""
    access_request.step_text = capfirst(policy.waiting_for(access_request))
    access_request.approvals_so_far = selectors.approvals_of(access_request)
    access_request.on_call = selectors.on_call_asked(access_request) if access_request.status == RS.PENDING else []
    access_request.bundle_others = selectors.bundle_others(access_request)
    access_request.needs_step_up = any(policy.needs_step_up(p) for p in _profiles_decided(access_request))
    return access_request


def _request_initial(request, profiles) -> dict:
    """Pre-fill from one's own earlier request (?again=<id>) or a profile link (?profile=<id>)."""
    again = request.GET.get("again", "")
    earlier = selectors.own_request(request.user, int(again)) if again.isdigit() else None
    if earlier is not None:
        initial = {
            "profile": earlier.profile_id,
            "duration": format_duration(earlier.duration),
            "justification": earlier.justification,
            "ticket": earlier.ticket,
        }
        if earlier.bundle:
            initial["also"] = [r.profile_id for r in selectors.bundle_others(earlier)]
        return initial
    chosen = profiles.filter(pk=request.GET["profile"]).first() if request.GET.get("profile", "").isdigit() else None
    if chosen:
        return {"profile": chosen.pk, "duration": format_duration(chosen.default_duration)}
    return {}


def _submitted_message(created) -> str:
    if created[0].break_glass:
        noun = "request" if len(created) == 1 else "requests"
        return (
            f"Break-glass: {noun} {_ids(created)} granted at once, without approval. "
            "The use is flagged and an approver will review it afterwards."
        )
    approved = [r for r in created if r.status == RS.APPROVED]
    pending = [r for r in created if r.status != RS.APPROVED]
    parts = []
    if pending:
        parts.append(
            f"Request {_ids(pending)} sent to its approvers."
            if len(pending) == 1
            else f"Requests {_ids(pending)} sent to their approvers."
        )
    if approved:
        rules = ", ".join(sorted({r.auto_rule for r in approved}))
        verb = "Request" if len(approved) == 1 else "Requests"
        parts.append(f"{verb} {_ids(approved)} approved by policy ({rules}); the access is being set up.")
    return " ".join(parts)


def _step_up(request, action: dict):
    """Keep `action` and send the person to sign in again; the resume page carries it out when they are back."""
    key = stepup.stash(request, action)
    return stepup.begin(
        request,
        next_url=reverse("grants:step_up_resume", args=[key]),
        action=action["kind"],
        password_url=reverse("accounts:step_up"),
    )


@login_required
@require_GET
def step_up_resume(request, key):
    """Carry out what waited for a step-up, as it was asked: the approval with its comment, the reveal, the break-glass.

    A GET (the IdP sends the browser back with one): the key is random, kept in
    this session only and used once, so another site cannot make anyone do this.
    """
    action = stepup.take(request, key)
    if action is None:
        messages.warning(
            request,
            "Nothing is waiting for that sign-in any more: it was done already, or waited more than 10 minutes.",
        )
        return redirect("grants:my_access")
    if action["kind"] == "approve":
        return _decide(request, action)
    if action["kind"] == "reveal":
        return _reveal(request, _get_grant_for_viewer(request, action["grant"]))
    data = QueryDict(mutable=True)
    for name, values in action["data"]:
        data.setlist(name, values)
    return _request_form(request, data, resumed=True)


@login_required
def request_new(request):
    return _request_form(request, request.POST if request.method == "POST" else None)


def _request_form(request, data, *, resumed=False):
    profiles = selectors.requestable_profiles(request.user).select_related("policy")
    may_break_glass = any(policy.may_break_glass(request.user, p) for p in profiles)
    form = RequestForm(
        data, profiles=profiles, break_glass=may_break_glass, initial=_request_initial(request, profiles)
    )
    if data is not None and form.is_valid():
        asked = form.profiles_asked()
        break_glass = form.cleaned_data.get("break_glass", False)
        evidence = stepup.current(request)
        if (
            break_glass
            and not resumed
            and all(policy.may_break_glass(request.user, p) for p in asked)
            and policy.step_up_refusal(asked, action="break_glass", channel="web", step_up=evidence)
        ):
            kept = [(name, values) for name, values in data.lists() if name != "csrfmiddlewaretoken"]
            return _step_up(request, {"kind": "break_glass", "data": kept})
        shared = {
            "duration": form.cleaned_data["duration"],
            "justification": form.cleaned_data["justification"],
            "ticket": form.cleaned_data["ticket"],
            "starts_at": form.cleaned_data["starts_at"],
            "break_glass": break_glass,
            "step_up": evidence,
            "reviewers": usernames(form.cleaned_data.get("reviewers") or ""),
        }
        if form.params():
            shared["params"] = form.params()
        try:
            if len(asked) > 1:
                created = lifecycle.submit_bundle(requester=request.user, profiles=asked, **shared)
            else:
                created = [lifecycle.submit_request(requester=request.user, profile=asked[0], **shared)]
        except lifecycle.InvalidRequestError as exc:
            for field, message in exc.errors.items():
                if field == "profile" and len(asked) > 1:
                    # The lifecycle does not say which member of the bundle it was.
                    field, message = None, f"One of the profiles you chose: {message}"
                form.add_error(field if field in form.fields else None, message)
        except lifecycle.StepUpRequiredError as exc:
            form.add_error(None, str(exc))
        except lifecycle.NotAllowedError as exc:
            # With several profiles or break-glass, the refusal may not be about the first profile.
            form.add_error("profile" if len(asked) == 1 and not break_glass else None, str(exc))
        else:
            messages.success(request, _submitted_message(created))
            response = redirect("grants:request_detail", pk=created[0].pk)
            if form.cleaned_data["time_zone"]:
                timezones.remember_zone(response, form.cleaned_data["time_zone"])
            return response
    return render(request, "grants/request_new.html", {"form": form, "profiles": profiles})


@login_required
def inbox(request):
    pending = list(selectors.requests_awaiting(request.user))
    for item in pending:
        _with_workflow(item)
        item.history = selectors.recent_history(item.requester)
    return render(request, "grants/inbox.html", {"pending": pending})


@login_required
def request_detail(request, pk):
    access_request = _with_workflow(_get_request_for_viewer(request, pk))
    can_decide = access_request.status == RS.PENDING and policy.may_decide(request.user, access_request)
    grant = Grant.objects.filter(request=access_request).first()
    review = BreakGlassReview.objects.filter(request=access_request).select_related("closed_by").first()
    return render(
        request,
        "grants/request_detail.html",
        {
            "req": access_request,
            "grant": grant,
            "review": review,
            "can_decide": can_decide,
            "is_requester": access_request.requester_id == request.user.pk,
            "progress": _progress(access_request, grant, viewer=request.user),
            "history": selectors.recent_history(access_request.requester, limit=6) if can_decide else None,
        },
    )


def _profiles_decided(access_request) -> list:
    """Return the profiles one decision on this request decides: its own and its bundle's."""
    return [access_request.profile] + [
        r.profile for r in selectors.bundle_others(access_request) if r.status == RS.PENDING
    ]


def _progress(access_request, grant, *, viewer) -> dict:
    """Return what the request page shows of its progress; `ready` when the viewer may now reveal the credentials."""
    ready = grant is not None and grant.credentials_available and grant.user_id == viewer.pk
    return {
        "id": access_request.pk,
        "status": access_request.status,
        "status_display": access_request.get_status_display(),
        "grant": grant
        and {
            "id": grant.pk,
            "status": grant.status,
            "status_display": grant.get_status_display(),
            "url": reverse("grants:grant_detail", args=[grant.pk]),
        },
        "credentials_url": reverse("grants:grant_credentials", args=[grant.pk]) if ready else None,
    }


@login_required
@require_GET
def request_status(request, pk):
    """Answer the request page's script: the request's progress as JSON, for whoever may see the page."""
    access_request = _get_request_for_viewer(request, pk)
    grant = Grant.objects.filter(request=access_request).first()
    response = JsonResponse(_progress(access_request, grant, viewer=request.user))
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def request_decide(request, pk):
    access_request = get_object_or_404(AccessRequest.objects.select_related("profile"), pk=pk)
    form = DecisionForm(request.POST)
    action = request.POST.get("action")
    if action not in ("approve", "deny") or not form.is_valid():
        if not selectors.may_view_request(request.user, access_request):
            raise Http404  # outsiders learn nothing, not even that the request exists
        messages.error(request, "Choose Approve or Deny; a comment has at most 2,000 characters.")
        return _back(request.POST.get("next"), pk)
    decision = {
        "kind": action,
        "request": pk,
        "comment": form.cleaned_data["comment"],
        "step": form.cleaned_data["step"],
        "next": request.POST.get("next", ""),
    }
    if (
        action == "approve"
        and policy.may_decide(request.user, access_request)
        and policy.step_up_refusal(
            _profiles_decided(access_request), action="approve", channel="web", step_up=stepup.current(request)
        )
    ):
        return _step_up(request, decision)
    return _decide(request, decision)


def _back(next_page, pk):
    return redirect("grants:inbox") if next_page == "inbox" else redirect("grants:request_detail", pk=pk)


def _decide(request, decision: dict):
    """Approve or deny as `decision` says (the form, or what waited for a step-up); message and redirect."""
    pk, action = decision["request"], decision["kind"]
    access_request = get_object_or_404(AccessRequest, pk=pk)
    back = _back(decision["next"], pk)
    decide = lifecycle.approve_request if action == "approve" else lifecycle.deny_request
    extra = {"step_up": stepup.current(request)} if action == "approve" else {}
    try:
        decided = decide(
            access_request.pk, actor=request.user, comment=decision["comment"], step=decision["step"], **extra
        )
    except lifecycle.StepUpRequiredError as exc:
        messages.error(request, f"Nothing was decided: {exc}")
        return back
    except lifecycle.NotAllowedError as exc:
        # The lifecycle has recorded the attempt; outsiders still learn
        # nothing about the request.
        if not selectors.may_view_request(request.user, access_request):
            raise Http404 from None
        raise PermissionDenied(str(exc)) from None
    except lifecycle.TransitionError as exc:
        access_request.refresh_from_db()
        if access_request.status == RS.PENDING:
            messages.warning(request, str(exc))
        else:
            messages.warning(
                request, f"Request #{pk} was already {access_request.get_status_display().lower()}; nothing changed."
            )
    else:
        if decided.status == RS.PENDING:
            text = f"Your approval of request #{pk} is recorded; it now waits for {policy.waiting_for(decided)}."
        else:
            text = f"Request #{pk} {'approved' if action == 'approve' else 'denied'}."
        if decided.bundle:
            text += " The decision applies to the other requests of its bundle too."
        messages.success(request, text)
    return back


@login_required
@require_POST
def request_cancel(request, pk):
    access_request = _get_request_for_viewer(request, pk)
    try:
        lifecycle.cancel_request(access_request.pk, actor=request.user)
    except lifecycle.NotAllowedError as exc:
        raise PermissionDenied(str(exc)) from None
    except lifecycle.TransitionError:
        messages.warning(request, "This request is no longer pending; nothing changed.")
    else:
        messages.success(request, f"Request #{pk} cancelled.")
    return redirect("grants:request_detail", pk=pk)


@login_required
def my_access(request):
    current = list(selectors.current_grants(request.user))
    waiting = selectors.pending_extensions(current)
    for grant in current:
        grant.pending_extension = waiting.get(grant.pk)
    return render(
        request,
        "grants/my_access.html",
        {
            "current": current,
            "requests": RequestTable(selectors.own_requests(request.user), orderable=False),
            "past": PastGrantTable(selectors.past_grants(request.user), orderable=False),
        },
    )


@login_required
@require_POST
def grant_credentials(request, pk):
    grant = _get_grant_for_viewer(request, pk)
    if (
        grant.user_id == request.user.pk
        and grant.credentials_available
        and policy.step_up_refusal([grant.profile], action="reveal", channel="web", step_up=stepup.current(request))
    ):
        return _step_up(request, {"kind": "reveal", "grant": grant.pk})
    return _reveal(request, grant)


def _reveal(request, grant):
    try:
        credentials = lifecycle.reveal_credentials(grant.pk, actor=request.user, step_up=stepup.current(request))
    except lifecycle.StepUpRequiredError as exc:
        messages.error(request, f"The credentials stay hidden: {exc}")
        return redirect("grants:my_access")
    except lifecycle.NotAllowedError as exc:
        raise PermissionDenied(str(exc)) from None
    except lifecycle.TransitionError as exc:
        messages.warning(request, str(exc))
        return redirect("grants:my_access")
    response = render(request, "grants/credentials.html", {"grant": grant, "credentials": credentials})
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def grant_release(request, pk):
    grant = _get_grant_for_viewer(request, pk)
    try:
        lifecycle.revoke_grant(grant.pk, actor=request.user, reason=Grant.EndReason.RELEASED)
    except lifecycle.NotAllowedError as exc:
        raise PermissionDenied(str(exc)) from None
    except lifecycle.TransitionError:
        messages.warning(request, "This access is already ending; nothing changed.")
    else:
        messages.success(
            request, f"Releasing {grant.profile}: the access is being removed from {grant.profile.target}."
        )
    return redirect("grants:my_access")


@login_required
@require_POST
def grant_extend(request, pk):
    grant = _get_grant_for_viewer(request, pk)
    form = ExtensionForm(request.POST)
    labels = {name: field.label for name, field in form.fields.items()}
    if not form.is_valid():
        for name, errors in form.errors.items():
            messages.error(request, f"{labels.get(name, 'Extend')}: {' '.join(errors)}")
        return redirect("grants:my_access")
    try:
        extension = lifecycle.request_extension(
            grant.pk,
            actor=request.user,
            duration=form.cleaned_data["duration"],
            justification=form.cleaned_data["justification"],
        )
    except lifecycle.NotAllowedError as exc:
        raise PermissionDenied(str(exc)) from None
    except lifecycle.TransitionError as exc:
        messages.warning(request, str(exc))
    except lifecycle.InvalidRequestError as exc:
        for name, message in exc.errors.items():
            messages.error(request, f"{labels[name]}: {message}" if name in labels else message)
    else:
        if extension.status == RS.APPROVED:
            grant.refresh_from_db()
            messages.success(request, f"Extended until {_when(grant.expires_at)}.")
        else:
            messages.success(request, f"Extension request #{extension.pk} sent to approvers.")
    return redirect("grants:my_access")


@login_required
def grant_detail(request, pk):
    grant = _get_grant_for_viewer(request, pk)
    return render(request, "grants/grant_detail.html", {"grant": grant})


@login_required
def reviews(request):
    return render(request, "grants/reviews.html", {"reviews": selectors.open_reviews(request.user)})


@login_required
@require_POST
def review_close(request, pk):
    review = get_object_or_404(BreakGlassReview.objects.select_related("request"), pk=pk)
    form = ReviewForm(request.POST)
    if not form.is_valid():
        if not selectors.may_view_request(request.user, review.request):
            raise Http404  # as below: not even that this break-glass use exists
        messages.error(request, "Comment: keep it under 2,000 characters.")
        return redirect("grants:reviews")
    try:
        lifecycle.close_review(review.pk, actor=request.user, comment=form.cleaned_data["comment"])
    except lifecycle.NotAllowedError as exc:
        # Recorded by the lifecycle; as with a decision, someone who may not see
        # the request learns nothing (review ids would count break-glass uses).
        if not selectors.may_view_request(request.user, review.request):
            raise Http404 from None
        raise PermissionDenied(str(exc)) from None
    except lifecycle.TransitionError as exc:
        messages.warning(request, str(exc))
    except lifecycle.InvalidRequestError as exc:
        for message in exc.errors.values():
            messages.error(request, f"Comment: {message}")
    else:
        messages.success(request, f"Review of break-glass request #{review.request_id} closed.")
    return redirect("grants:reviews")


@login_required
def targets(request):
    if not request.user.is_staff:
        raise PermissionDenied("Only admins and auditors see the targets page.")
    context = {"targets": selectors.targets_overview(), "findings": selectors.drift_findings(), "sinks": sink_status()}
    return render(request, "grants/targets.html", context)


@login_required
def delegations(request):
    """List the delegations one gave and received; name a delegate for a period."""
    form = DelegationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        delegate = selectors.active_user(data["delegate"])
        try:
            lifecycle.delegate_approvals(
                actor=request.user,
                delegate=delegate,
                starts_at=data["starts_at"],
                ends_at=data["ends_at"],
                reason=data["reason"],
            )
        except lifecycle.InvalidRequestError as exc:
            for field, message in exc.errors.items():
                form.add_error(field, message)
        else:
            messages.success(
                request,
                f"{delegate.label} may decide for you from {_when(data['starts_at'])} to {_when(data['ends_at'])}.",
            )
            return redirect("grants:delegations")
    given, received = selectors.delegations_of(request.user)
    return render(request, "grants/delegations.html", {"form": form, "given": given, "received": received})


@login_required
@require_POST
def delegation_end(request, pk):
    delegation = get_object_or_404(Delegation, pk=pk, delegator=request.user)
    try:
        lifecycle.end_delegation(delegation.pk, actor=request.user)
    except lifecycle.TransitionError as exc:
        messages.warning(request, str(exc))
    else:
        messages.success(request, "Delegation ended.")
    return redirect("grants:delegations")
