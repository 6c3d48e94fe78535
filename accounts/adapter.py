"""Identity from the IdP: allauth adapters, and the one mapping from claims to a user used at login and at refresh."""

import logging

import requests
from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.socialaccount.providers.base import AuthProcess
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

import audit

from . import stepup
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
        end_session = openid_config().get("end_session_endpoint")
        if not end_session:
            return back
        return_to = settings.PORTAL_URL.rstrip("/") + reverse("account_login")
        return (
            f"{end_session}?{urlencode({'client_id': settings.OIDC_CLIENT_ID, 'post_logout_redirect_uri': return_to})}"
        )


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    """Sign-in through the IdP: the IdP's claims decide groups, manager and staff."""

    def is_open_for_signup(self, request, sociallogin):
        return True

    def pre_social_login(self, request, sociallogin):
        request._jit_sso = True
        if sociallogin.is_existing:
            sync_user_from_claims(sociallogin.user, claims_of(sociallogin))
        if (sociallogin.state or {}).get("process") == AuthProcess.REDIRECT:
            # A step-up (accounts/stepup.py): nobody is signed in or out, the evidence is kept.
            stepup.record_from_idp(request, sociallogin)

    def save_user(self, request, sociallogin, form=None):
        user = super().save_user(request, sociallogin, form)
        sync_user_from_claims(user, claims_of(sociallogin))
        return user


def claims_of(sociallogin) -> dict:
    data = sociallogin.account.extra_data or {}
    # userinfo is fresher than the ID token where both carry a claim.
    return {**(data.get("id_token") or {}), **(data.get("userinfo") or {})}


def openid_config() -> dict:
    """Return the IdP's discovery document (cached for an hour), or {} if it cannot be read now."""
    key = "jitportal:oidc-config:" + settings.OIDC_ISSUER
    config = cache.get(key)
    if config is None:
        url = settings.OIDC_ISSUER.rstrip("/") + "/.well-known/openid-configuration"
        try:
            response = requests.get(url, timeout=5)
            response.raise_for_status()
            config = response.json()
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


def _one_line(value) -> str:
    # Names end up in mail and Slack text; a line break in a claim must not start a new header or line.
    return " ".join(str(value).split())


def _claim_bool(value) -> bool | None:
    """Return True/False for a JSON boolean or "true"/"false" (some IdPs send strings), None when absent or unclear."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


_validate_email = EmailValidator()


def email_refusal(claims: dict) -> str | None:
    """Return why the claims' email may not be kept as the user's address, or None if it may."""
    email = claims.get("email")
    if not isinstance(email, str):
        return "it is not a string"
    verified = _claim_bool(claims.get("email_verified"))
    if verified is False or (verified is None and settings.OIDC_REQUIRE_VERIFIED_EMAIL):
        return "the IdP does not say it is verified (email_verified)"
    if "\r" in email or "\n" in email or len(email) > 254:
        return "it has a line break or is too long"
    try:
        _validate_email(email)
    except ValidationError:
        return "it is not an email address"
    return None


def _email_of(user, claims: dict) -> str:
    """Return the address to keep: the claim if it is verified and valid, else none at all."""
    if "email" not in claims:
        return user.email
    if not claims["email"]:
        return ""
    refusal = email_refusal(claims)
    if refusal:
        # Never used for matching a manager or Slack, never sent mail: an unverified
        # address may be anyone's, a malformed one breaks the mail to everyone.
        log.warning("Not keeping the email claim %r of %s: %s.", claims["email"], user.username, refusal)
        return ""
    return claims["email"]


# The user field each OIDC_MANAGER_MATCH compares the manager claim with.
MATCH_FIELDS = {"sub": "idp_subject", "employee_id": "employee_id", "email": "email"}


def _match_lookup(ref: str) -> dict:
    field = MATCH_FIELDS[settings.OIDC_MANAGER_MATCH]
    return {f"{field}__iexact" if field == "email" else field: ref}


def manager_candidates(ref: str):
    """Return the active users the manager claim `ref` names (by OIDC_MANAGER_MATCH); never by username."""
    if not ref:
        return get_user_model().objects.none()
    return get_user_model().objects.filter(is_active=True, **_match_lookup(ref))


def _manager_key(user) -> str:
    return getattr(user, MATCH_FIELDS[settings.OIDC_MANAGER_MATCH])


def _record_ambiguous(user, ref: str, found: list, *, role: str):
    names = sorted(u.username for u in found)
    log.warning(
        "Manager claim %r of %s matches %s users (%s): no manager linked.", ref, role, len(names), ", ".join(names)
    )
    audit.record(
        "user.manager_ambiguous",
        obj=user,
        details={"user": user.username, "manager_ref": ref, "match": settings.OIDC_MANAGER_MATCH, "matches": names},
    )


@transaction.atomic
def sync_user_from_claims(user, claims: dict):
    """Set `user`'s name, email, keys, managed groups, manager and staff flag from the IdP's claims.

    Used at every login and by every refresh without one (accounts/identity.py).
    Groups are added and removed, but only those the portal manages
    (OIDC_MANAGED_GROUPS; all when empty). Losing a group sends
    `groups_removed`, so grants that depended on it end at once. The
    manager claim is matched by OIDC_MANAGER_MATCH against exactly one
    active user; several matches link nobody.
    """
    User = get_user_model()
    if not user.is_active and user.deactivated_by_idp_at:
        # The IdP vouches for the account again (a sign-in): undo what a refused refresh did.
        # An account an admin deactivated stays so.
        user.is_active, user.deactivated_by_idp_at = True, None
        audit.record(
            "user.reactivated", obj=user, details={"user": user.username, "reason": "signed in at the IdP again"}
        )
    before = {"email": user.email, "manager": user.manager.username if user.manager_id else None}
    old_key, old_ref, old_manager_id = _manager_key(user), user.manager_ref, user.manager_id

    for field, claim in (("first_name", "given_name"), ("last_name", "family_name")):
        if claims.get(claim):
            setattr(user, field, _one_line(claims[claim])[:150])
    user.email = _email_of(user, claims)
    if claims.get("sub"):
        user.idp_subject = str(claims["sub"])[:255]
    if settings.OIDC_EMPLOYEE_ID_CLAIM and settings.OIDC_EMPLOYEE_ID_CLAIM in claims:
        user.employee_id = str(claims[settings.OIDC_EMPLOYEE_ID_CLAIM] or "").strip()[:150]

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

    ref = str(claims.get(settings.OIDC_MANAGER_CLAIM) or "").strip()[:254]
    found = list(manager_candidates(ref).exclude(pk=user.pk)[:10])
    user.manager_ref = ref
    user.manager = found[0] if len(found) == 1 else None
    if len(found) > 1 and (ref != old_ref or old_manager_id is not None):
        # Recorded when the link is refused, not again at every refresh of the same claim.
        _record_ambiguous(user, ref, found, role=user.username)
    if not user.is_superuser:
        user.is_staff = bool(wanted & set(settings.OIDC_STAFF_GROUPS))
    user.identity_refreshed_at = timezone.now()
    user.save()

    key = _manager_key(user)
    if key and key != old_key:
        _link_reports(user, key)

    after = {"email": user.email, "manager": user.manager.username if user.manager_id else None}
    changed = {k: [before[k], after[k]] for k in before if before[k] != after[k]}
    if changed:
        audit.record("user.profile_synced", obj=user, details={"user": user.username, **changed})
    if added or removed:
        audit.record(
            "user.groups_synced", obj=user, details={"added": added, "removed": removed, "user": user.username}
        )
    if removed:
        groups_removed.send(sender=User, user=user, removed=removed)


def _link_reports(user, key: str):
    """Make `user` the manager of those whose manager claim names `key`, unless `key` names someone else too."""
    User = get_user_model()
    reports = User.objects.filter(
        **{"manager_ref__iexact" if settings.OIDC_MANAGER_MATCH == "email" else "manager_ref": key}
    )
    reports = reports.exclude(pk=user.pk)
    if not reports.exists():
        return
    holders = list(manager_candidates(key)[:10])
    if len(holders) == 1 and holders[0].pk == user.pk:
        linked = sorted(reports.exclude(manager=user).values_list("username", flat=True))
        if linked:
            reports.exclude(manager=user).update(manager=user)
            audit.record("user.reports_linked", obj=user, details={"user": user.username, "reports": linked})
    elif len(holders) > 1:
        reports.exclude(manager=None).update(manager=None)
        _record_ambiguous(user, key, holders, role=f"the reports of {user.username}")
