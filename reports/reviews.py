"""The access reviews' pages: campaigns (and opening one), a campaign's progress, a reviewer's items, the evidence,
closing a campaign early and reinstating a removal.

Thin like the other pages: load, check who may, call one function of
`grants.reviews` (the campaigns' writes) or a selector, render or redirect.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

import grants.selectors as selectors
from grants import reviews as campaigns

from . import columns, downloads
from .forms import CloseReviewForm, DecideItemForm, OpenReviewForm, ReinstateForm
from .scope import ALL


def _review(pk):
    review = selectors.review_of(pk)
    if review is None:
        raise Http404("No such access review.")
    return review


def _told(request, change, *args, **kwargs):
    """Run a write of grants.reviews; say a refusal as the pages do (403, a warning, the field's error); None then."""
    try:
        return change(*args, **kwargs)
    except campaigns.NotAllowedError as exc:
        raise PermissionDenied(str(exc)) from None
    except campaigns.TransitionError as exc:
        messages.warning(request, str(exc))
    except campaigns.InvalidRequestError as exc:
        for field, message in exc.errors.items():
            messages.error(request, f"{(field or 'error').capitalize()}: {message}")
    return None


@login_required
def review_list(request):
    may_open = selectors.may_open_review(request.user)
    form = OpenReviewForm(request.POST or None) if may_open else None
    if request.method == "POST":
        if not may_open:
            raise PermissionDenied("Only auditors and admins with the permission to open access reviews may open one.")
        if form.is_valid():
            data = form.cleaned_data
            try:
                review = campaigns.open_review(
                    actor=request.user,
                    profiles=data["profiles"],
                    due_at=data["due_at"],
                    undecided=data["undecided"],
                    title=data["title"],
                    period_days=data["period_days"],
                )
            except campaigns.InvalidRequestError as exc:
                for field, message in exc.errors.items():
                    form.add_error(field if field in form.fields else None, message)
            except campaigns.NotAllowedError as exc:
                raise PermissionDenied(str(exc)) from None
            else:
                messages.success(request, f"Access review “{review.title}” opened: {review.items.count()} item(s).")
                return redirect("audit:review", pk=review.pk)
    context = {
        "reviews": selectors.reviews_for(request.user),
        "form": form,
        "sees_all": selectors.sees_all_reviews(request.user),
    }
    if context["sees_all"]:
        context["removals"] = selectors.removals_with_idp_groups()
        context["behind"] = sum(1 for _, groups in context["removals"] if groups)
        context["may_reinstate"] = selectors.may_reinstate(request.user)
    return render(request, "reports/reviews.html", context, status=400 if form is not None and form.errors else 200)


@login_required
def review_detail(request, pk):
    review = _review(pk)
    if not selectors.may_view_review(request.user, review):
        raise PermissionDenied("Only auditors and the campaign's reviewers see it.")
    per_profile, per_reviewer = selectors.review_progress(review)
    sees_all = selectors.sees_all_reviews(request.user)
    items = selectors.review_items(review) if sees_all else selectors.items_for_reviewer(request.user, review)
    context = {
        "review": review,
        "per_profile": per_profile,
        "per_reviewer": per_reviewer,
        "items": items,
        "sees_all": sees_all,
        "mine": selectors.items_for_reviewer(request.user, review),
        "may_close": review.is_open and selectors.may_open_review(request.user),
        "close_form": CloseReviewForm(),
        "undecided": review.total - review.decided,
    }
    return render(request, "reports/review.html", context)


@login_required
@require_POST
def review_close(request, pk):
    review = _review(pk)
    if not selectors.may_open_review(request.user):
        raise PermissionDenied("Only auditors and admins with the permission to open access reviews may close one.")
    form = CloseReviewForm(request.POST)
    if not form.is_valid():
        for errors in form.errors.values():
            messages.error(request, " ".join(errors))
        return redirect("audit:review", pk=review.pk)
    undecided = review.total - review.decided
    try:
        campaigns.close_review(review.pk, actor=request.user)
    except campaigns.NotAllowedError as exc:
        raise PermissionDenied(str(exc)) from None
    except campaigns.TransitionError as exc:
        messages.warning(request, str(exc))
    else:
        rule = "kept" if review.undecided == selectors.UNDECIDED_RULES.KEEP else "removed"
        messages.success(
            request, f"Access review “{review.title}” closed before its due date: {undecided} undecided item(s) {rule}."
        )
    return redirect("audit:review", pk=review.pk)


@login_required
@require_POST
def removal_reinstate(request, pk):
    removal = selectors.removal_or_none(pk)
    if removal is None:
        raise Http404("No such removal.")
    if not selectors.may_reinstate(request.user):
        raise PermissionDenied("Only those who may open access reviews reinstate a removal.")
    form = ReinstateForm(request.POST)
    if not form.is_valid():
        for errors in form.errors.values():
            messages.error(request, f"Reason: {' '.join(errors)}")
        return redirect("audit:reviews")
    reinstated = _told(
        request, campaigns.reinstate_eligibility, removal.pk, actor=request.user, reason=form.cleaned_data["reason"]
    )
    if reinstated is not None:
        what = "request" if removal.role == selectors.REVIEW_ROLES.REQUESTER else "approve"
        messages.success(
            request, f"{removal.person.username} may {what} {removal.profile.title} again: the removal is reinstated."
        )
    return redirect("audit:reviews")


@login_required
def review_evidence(request, pk):
    review = _review(pk)
    if not selectors.sees_all_reviews(request.user):
        raise PermissionDenied("Only auditors download a campaign's evidence.")
    return downloads.csv_response(
        request,
        report="access_review",
        columns=columns.REVIEW_EVIDENCE,
        rows=selectors.review_items(review),
        filters={"review": review.pk},
        scope=ALL,
    )


@login_required
def review_items(request, pk):
    review = _review(pk)
    if request.method == "POST":
        return _decide(request, review)
    if not selectors.may_view_review(request.user, review):
        raise PermissionDenied("You review nothing in this campaign.")
    items = selectors.items_for_reviewer(request.user, review)
    return render(request, "reports/review_items.html", {"review": review, "items": items})


def _decide(request, review):
    form = DecideItemForm(request.POST)
    if not form.is_valid():
        for field, errors in form.errors.items():
            messages.error(request, f"{field.capitalize()}: {' '.join(errors)}")
        return redirect("audit:review_items", pk=review.pk)
    data = form.cleaned_data
    if not selectors.review_items(review).filter(pk=data["item"]).exists():
        raise Http404("No such item in this access review.")
    item = _told(
        request,
        campaigns.decide_item,
        data["item"],
        actor=request.user,
        decision=data["decision"],
        comment=data["comment"],
    )
    if item is not None:
        said = "kept" if item.decision == "keep" else "removed: the portal refuses it from now on"
        if item.changed_from == "remove" and item.decision == "keep":
            said = "changed to keep: the removal no longer applies (what it ended stays ended)"
        elif item.changed_from:
            said = f"changed from {item.changed_from} to {said}"
        messages.success(
            request, f"{item.person.username} ({item.get_role_display().lower()} {item.profile.title}): {said}."
        )
    return redirect("audit:review_items", pk=review.pk)
