"""Tell people what needs them. Sent from background tasks, never inside a request's transaction.

Issue 7 grows this into email and Slack with per-user choices; today it
sends email through Django's mail framework (EMAIL_URL).
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db.models import Q
from django.urls import reverse

from . import policy
from .models import AccessRequest


def approvers_of(access_request: AccessRequest):
    """Return the active users who may decide some step of the request (never the requester)."""
    steps = policy.steps_for(access_request.profile)
    groups = [s.group for s in steps if s.group]
    who = Q(groups__name__in=groups)
    if any(s.manager for s in steps) and access_request.requester.manager_id:
        who |= Q(pk=access_request.requester.manager_id)
    return get_user_model().objects.filter(who, is_active=True).exclude(pk=access_request.requester_id).distinct()


def break_glass_used(request_id):
    """Email the profile's approvers that break-glass access was taken and a review waits for them."""
    req = AccessRequest.objects.select_related("profile__target", "profile__policy", "requester").get(pk=request_id)
    recipients = sorted({u.email for u in approvers_of(req) if u.email})
    if not recipients:
        return 0
    link = settings.PORTAL_URL.rstrip("/") + reverse("grants:reviews")
    body = (
        f"{req.requester.label} used break-glass access to {req.profile.title} on {req.profile.target} "
        f"for {req.duration}, without approval.\n\n"
        f"Reason: {req.justification}\n\n"
        f"Review it and close the review with a comment: {link}\n"
    )
    return send_mail(f"[jitportal] Break-glass: {req.requester.username} on {req.profile.title}", body, None, recipients)


def drift_found(findings):
    """Email the portal's admins what the reconciler found on the targets."""
    recipients = sorted(set(get_user_model().objects.filter(is_superuser=True, is_active=True).exclude(email="").values_list("email", flat=True)))
    if not findings or not recipients:
        return 0
    lines = [f"- {f.target.name}: {f.external_ref}: {f.get_kind_display()} ({f.action})" for f in findings]
    link = settings.PORTAL_URL.rstrip("/") + reverse("grants:targets")
    body = "The reconciler found access on targets that no grant explains:\n\n" + "\n".join(lines) + f"\n\nDetails: {link}\n"
    return send_mail(f"[jitportal] Drift: {len(findings)} finding(s)", body, None, recipients)
