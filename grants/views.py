"""Pages of the request journey. Thin: load with an access check, validate, call the lifecycle, redirect."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from . import lifecycle, policy, selectors
from .durations import format_duration
from .forms import DecisionForm, RequestForm
from .models import AccessRequest, Grant
from .tables import PastGrantTable, RequestTable


def _get_request_for_viewer(request, pk) -> AccessRequest:
    access_request = get_object_or_404(AccessRequest.objects.select_related("profile__target", "requester", "decided_by"), pk=pk)
    if not selectors.may_view_request(request.user, access_request):
        # 404, not 403: outsiders learn nothing about who asked for what.
        raise Http404
    return access_request


def _get_grant_for_viewer(request, pk) -> Grant:
    grant = get_object_or_404(Grant.objects.select_related("profile__target", "user", "request", "ended_by"), pk=pk)
    if not selectors.may_view_request(request.user, grant.request):
        raise Http404
    return grant


@login_required
def request_new(request):
    profiles = selectors.requestable_profiles(request.user)
    initial = {}
    chosen = profiles.filter(pk=request.GET.get("profile") or 0).first() if request.GET.get("profile", "").isdigit() else None
    if chosen:
        initial = {"profile": chosen.pk, "duration": format_duration(chosen.default_duration)}
    form = RequestForm(request.POST or None, profiles=profiles, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            access_request = lifecycle.submit_request(
                requester=request.user,
                profile=form.cleaned_data["profile"],
                duration=form.cleaned_data["duration"],
                justification=form.cleaned_data["justification"],
                ticket=form.cleaned_data["ticket"],
            )
        except lifecycle.InvalidRequestError as exc:
            for field, message in exc.errors.items():
                form.add_error(field, message)
        except lifecycle.NotAllowedError as exc:
            form.add_error("profile", str(exc))
        else:
            messages.success(request, f"Request #{access_request.pk} sent to its approvers.")
            return redirect("grants:request_detail", pk=access_request.pk)
    return render(request, "grants/request_new.html", {"form": form, "profiles": profiles})


@login_required
def inbox(request):
    pending = list(selectors.requests_awaiting(request.user))
    for item in pending:
        item.history = selectors.recent_history(item.requester)
    return render(request, "grants/inbox.html", {"pending": pending, "form": DecisionForm()})


@login_required
def request_detail(request, pk):
    access_request = _get_request_for_viewer(request, pk)
    can_decide = (
        access_request.status == AccessRequest.Status.PENDING and policy.approval_refusal(request.user, access_request) is None
    )
    grant = Grant.objects.filter(request=access_request).first()
    return render(
        request,
        "grants/request_detail.html",
        {
            "req": access_request,
            "grant": grant,
            "can_decide": can_decide,
            "is_requester": access_request.requester_id == request.user.pk,
            "history": selectors.recent_history(access_request.requester, limit=6) if can_decide else None,
            "form": DecisionForm(),
        },
    )


@login_required
@require_POST
def request_decide(request, pk):
    access_request = get_object_or_404(AccessRequest, pk=pk)
    form = DecisionForm(request.POST)
    action = request.POST.get("action")
    back = redirect("grants:inbox") if request.POST.get("next") == "inbox" else redirect("grants:request_detail", pk=pk)
    if action not in ("approve", "deny") or not form.is_valid():
        messages.error(request, "Choose Approve or Deny; a comment has at most 2,000 characters.")
        return back
    decide = lifecycle.approve_request if action == "approve" else lifecycle.deny_request
    try:
        decide(access_request.pk, actor=request.user, comment=form.cleaned_data["comment"])
    except lifecycle.NotAllowedError as exc:
        # The lifecycle has recorded the attempt; outsiders still learn
        # nothing about the request.
        if not selectors.may_view_request(request.user, access_request):
            raise Http404 from None
        raise PermissionDenied(str(exc)) from None
    except lifecycle.TransitionError:
        access_request.refresh_from_db()
        messages.warning(request, f"Request #{pk} was already {access_request.get_status_display().lower()}; nothing changed.")
    else:
        messages.success(request, f"Request #{pk} {'approved' if action == 'approve' else 'denied'}.")
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
    return render(
        request,
        "grants/my_access.html",
        {
            "current": selectors.current_grants(request.user),
            "requests": RequestTable(selectors.own_requests(request.user), orderable=False),
            "past": PastGrantTable(selectors.past_grants(request.user), orderable=False),
        },
    )


@login_required
@require_POST
def grant_credentials(request, pk):
    grant = _get_grant_for_viewer(request, pk)
    try:
        credentials = lifecycle.reveal_credentials(grant.pk, actor=request.user)
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
        messages.success(request, f"Releasing {grant.profile}: the access is being removed from {grant.profile.target}.")
    return redirect("grants:my_access")


@login_required
def grant_detail(request, pk):
    grant = _get_grant_for_viewer(request, pk)
    return render(request, "grants/grant_detail.html", {"grant": grant})
