"""Who may request and who may decide: plain rules, no side effects."""

from .models import AccessProfile, AccessRequest


def may_request(user, profile: AccessProfile) -> bool:
    """Return whether `user` may ask for `profile` (an empty requestable_by means everyone)."""
    if not user.is_authenticated or not user.is_active:
        return False
    allowed = list(profile.requestable_by.all())
    if not allowed:
        return True
    return user.groups.filter(pk__in=[g.pk for g in allowed]).exists()


def is_approver(user, access_request: AccessRequest) -> bool:
    """Return whether `user` is among those who decide this request (own requests included)."""
    if not user.is_authenticated or not user.is_active:
        return False
    profile = access_request.profile
    if profile.approver_group_id and user.groups.filter(pk=profile.approver_group_id).exists():
        return True
    return bool(profile.manager_approves and access_request.requester.manager_id == user.pk)


def approval_refusal(user, access_request: AccessRequest) -> str | None:
    """Return why `user` may not decide `access_request`, or None if they may."""
    if access_request.requester_id == user.pk:
        return "You cannot decide your own request."
    if not is_approver(user, access_request):
        return "You are not an approver for this request."
    return None
