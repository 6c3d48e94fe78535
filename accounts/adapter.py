"""Identity from the IdP: allauth adapters that keep groups, manager and staff in step at every login."""

import logging

import requests
from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.db import transaction
from django.urls import reverse
from django.utils.http import urlencode

import audit

from .signals import groups_removed

log = logging.getLogger(__name__)


class AccountAdapter(DefaultAccountAdapter):
    """Local accounts: sign-in only in demo mode, never self sign-up; RP-initiated logout at the IdP."""

    def is_open_for_signup(self, request):
        return False

    def get_logout_redirect_url(self, request):
        back = super().get_logout_redirect_url(request)
        user = getattr(request, "user", None)
        if settings.DEMO_MODE or not user or not user.is_authenticated or not user.socialaccount_set.exists():
            return back
        end_session = _openid_config().get("end_session_endpoint")
        if not end_session:
            return back
        return_to = settings.PORTAL_URL.rstrip("/") + reverse("account_login")
        return f"{end_session}?{urlencode({'client_id': settings.OIDC_CLIENT_ID, 'post_logout_redirect_uri': return_to})}"


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    """Sign-in through the IdP: the IdP's claims decide groups, manager and staff."""

    def is_open_for_signup(self, request, sociallogin):
        return True

    def pre_social_login(self, request, sociallogin):
        request._jit_sso = True
        if sociallogin.is_existing:
            sync_user_from_claims(sociallogin.user, claims_of(sociallogin))

    def save_user(self, request, sociallogin, form=None):
        user = super().save_user(request, sociallogin, form)
        sync_user_from_claims(user, claims_of(sociallogin))
        return user


def claims_of(sociallogin) -> dict:
    data = sociallogin.account.extra_data or {}
    # userinfo is fresher than the ID token where both carry a claim.
    return {**(data.get("id_token") or {}), **(data.get("userinfo") or {})}


def _openid_config() -> dict:
    key = "jitportal:oidc-config"
    config = cache.get(key)
    if config is None:
        url = settings.OIDC_ISSUER.rstrip("/") + "/.well-known/openid-configuration"
        try:
            config = requests.get(url, timeout=5).json()
        except (requests.RequestException, ValueError) as exc:
            log.warning("Cannot read %s: %s", url, exc)
            return {}
        cache.set(key, config, 3600)
    return config


def _claim_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


@transaction.atomic
def sync_user_from_claims(user, claims: dict):
    """Set `user`'s name, email, managed groups, manager and staff flag from the IdP's claims.

    Groups are added and removed, but only those the portal manages
    (OIDC_MANAGED_GROUPS; all when empty). Losing a group sends
    `groups_removed`, so grants that depended on it end at once.
    """
    User = get_user_model()
    for field, claim in (("email", "email"), ("first_name", "given_name"), ("last_name", "family_name")):
        if claims.get(claim):
            setattr(user, field, str(claims[claim])[:150])
    managed = set(settings.OIDC_MANAGED_GROUPS)
    wanted = set(_claim_list(claims.get(settings.OIDC_GROUPS_CLAIM)))
    if managed:
        wanted &= managed
    current = set(user.groups.values_list("name", flat=True))
    removable = current & managed if managed else current
    added, removed = sorted(wanted - current), sorted(removable - wanted)
    for name in added:
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    if removed:
        user.groups.remove(*Group.objects.filter(name__in=removed))

    manager_ref = str(claims.get(settings.OIDC_MANAGER_CLAIM) or "")
    user.manager_ref = manager_ref
    user.manager = _find_user(manager_ref) if manager_ref else None
    if not user.is_superuser:
        user.is_staff = bool(wanted & set(settings.OIDC_STAFF_GROUPS))
    user.save()
    # People who named this user as manager before they ever signed in.
    if user.email:
        User.objects.filter(manager_ref__iexact=user.email, manager__isnull=True).exclude(pk=user.pk).update(manager=user)
    User.objects.filter(manager_ref=user.username, manager__isnull=True).exclude(pk=user.pk).update(manager=user)

    if added or removed:
        audit.record("user.groups_synced", obj=user, details={"added": added, "removed": removed, "user": user.username})
    if removed:
        groups_removed.send(sender=User, user=user, removed=removed)


def _find_user(ref: str):
    User = get_user_model()
    return User.objects.filter(email__iexact=ref).first() or User.objects.filter(username=ref).first()
