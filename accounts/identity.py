"""Identity refreshed from the IdP without an interactive login.

At sign-in allauth hands us the IdP's claims. Between sign-ins the portal
keeps each person's refresh token (allauth's SocialToken.token_secret;
the `offline_access` scope asks for one) and uses it, with the IdP's
userinfo endpoint, to read the same claims again:

- `sync_identities()` runs every minute (django-q2 schedule "jitportal:
  sync identities") and refreshes everyone whose identity is older than
  JIT_IDENTITY_SYNC_INTERVAL;
- `ensure_recent_identity(user)` is called before a decision made by API
  token or by Slack button, and refreshes first when the identity is
  older than JIT_IDENTITY_MAX_AGE; the decision is refused if that fails.

Fresh claims go through `adapter.sync_user_from_claims`, the mapping used
at login. The one answer that counts as "gone at the IdP" is the token
endpoint refusing the refresh token with `invalid_grant` (the account was
disabled or deleted, or the IdP ended the grant, or the token expired):
the account is deactivated, which makes its API tokens fail and ends its
live grants and pending requests (`user_deactivated`, grants subscribes).
A network error, a 5xx, any other error code (a misconfigured client
must not lock everyone out) or a userinfo failure changes nothing: the
identity just stays as old as it is. Signing in at the IdP again
reactivates an account deactivated this way, and only such an account.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time

import requests
from allauth.socialaccount.internal import jwtkit
from allauth.socialaccount.models import SocialAccount, SocialToken
from allauth.socialaccount.providers.oauth2.client import OAuth2Error
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F
from django.utils import timezone

import audit

from .adapter import openid_config, sync_user_from_claims
from .signals import user_deactivated

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 10  # seconds per call to the IdP

REFRESHED, GONE, FAILED, NOT_APPLICABLE = "refreshed", "gone", "failed", "not applicable"


@dataclasses.dataclass(frozen=True)
class Refresh:
    outcome: str  # one of REFRESHED, GONE, FAILED, NOT_APPLICABLE
    message: str = ""


class IdentityError(Exception):
    """A decision needs a recent identity, and it could not be had; the message says what to do.

    `temporary`: the IdP could not be asked now (trying again may work), rather than the account being deactivated.
    """

    def __init__(self, message: str, *, temporary: bool):
        super().__init__(message)
        self.temporary = temporary


def _account(user) -> SocialAccount | None:
    if not settings.OIDC_ISSUER:
        return None  # demo mode: identities are local, there is nothing to refresh
    return SocialAccount.objects.filter(user=user, provider=settings.OIDC_PROVIDER_ID).first()


def _is_recent(user, max_age: int) -> bool:
    at = user.identity_refreshed_at
    return at is not None and at > timezone.now() - datetime.timedelta(seconds=max_age)


def refresh_identity(user, *, unless_newer_than: int | None = None) -> Refresh:
    """Read `user`'s claims from the IdP with their refresh token and apply them; deactivate them if the IdP refuses.

    With `unless_newer_than` (seconds), nothing is asked of the IdP if
    someone else refreshed the identity that recently while we waited.
    """
    account = _account(user)
    if account is None:
        return Refresh(NOT_APPLICABLE, "the account does not come from an identity provider")
    get_user_model().objects.filter(pk=user.pk).update(identity_checked_at=timezone.now())
    with transaction.atomic():
        # One refresh per person at a time: IdPs that rotate refresh tokens
        # refuse the older one, which must not read as "gone".
        token = SocialToken.objects.select_for_update().filter(account=account).order_by("pk").first()
        user.refresh_from_db(fields=["identity_refreshed_at", "is_active"])
        if not user.is_active:
            return Refresh(NOT_APPLICABLE, "the account is deactivated")
        if unless_newer_than is not None and _is_recent(user, unless_newer_than):
            return Refresh(REFRESHED)
        if token is None:
            return Refresh(FAILED, "the portal holds no token for this account; sign in to the portal once")
        result = _ask_idp(token, account)
    # The new tokens are committed above whatever happens below: a rotated
    # refresh token lost to a rollback would lock the person out.
    if isinstance(result, Refresh):
        if result.outcome == GONE:
            deactivate_user(user, reason=f"the identity provider refused to refresh it ({result.message})")
        else:
            log.warning("Could not refresh the identity of %s: %s", user.username, result.message)
        return result
    claims, extra_data = result
    SocialAccount.objects.filter(pk=account.pk).update(extra_data=extra_data)
    user.refresh_from_db()  # the mapping saves the whole row: start from what is there now
    sync_user_from_claims(user, claims)
    return Refresh(REFRESHED)


def _ask_idp(token: SocialToken, account: SocialAccount) -> Refresh | tuple[dict, dict]:
    """Return the fresh (claims, extra_data), or a Refresh saying why not; save the new tokens on `token`."""
    config = openid_config()
    if not config.get("token_endpoint") or not config.get("userinfo_endpoint"):
        return Refresh(FAILED, "the identity provider's discovery document could not be read")
    id_claims = {}
    if token.token_secret:
        methods = config.get("token_endpoint_auth_methods_supported", [])
        # As allauth does at login: Basic only where the IdP does not take the secret in the form.
        basic = "client_secret_post" not in methods and "client_secret_basic" in methods
        form = {"grant_type": "refresh_token", "refresh_token": token.token_secret}
        if not basic:
            form.update(client_id=settings.OIDC_CLIENT_ID, client_secret=settings.OIDC_CLIENT_SECRET)
        auth = (settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET) if basic else None
        try:
            response = requests.post(config["token_endpoint"], data=form, auth=auth, timeout=HTTP_TIMEOUT)
        except requests.RequestException as exc:
            return Refresh(FAILED, f"the identity provider did not answer: {exc.__class__.__name__}")
        answer = _json(response)
        if response.status_code != 200:
            error = str(answer.get("error") or f"HTTP {response.status_code}")
            description = str(answer.get("error_description") or "")[:200]
            if response.status_code in (400, 401) and error == "invalid_grant":
                return Refresh(GONE, f"invalid_grant: {description}" if description else "invalid_grant")
            return Refresh(FAILED, f"the identity provider refused the refresh: {error} {description}".strip())
        if not answer.get("access_token"):
            return Refresh(FAILED, "the identity provider's token answer has no access_token")
        token.token = answer["access_token"]
        if answer.get("refresh_token"):
            token.token_secret = answer["refresh_token"]
        expires_in = answer.get("expires_in")
        token.expires_at = (
            timezone.now() + datetime.timedelta(seconds=int(expires_in)) if str(expires_in).isdigit() else None
        )
        token.save(update_fields=["token", "token_secret", "expires_at"])
        if answer.get("id_token"):
            try:
                # Received straight from the token endpoint over TLS, so (OIDC Core
                # 3.1.3.7) the signature may go unchecked, as allauth does at login.
                id_claims = jwtkit.verify_and_decode(
                    credential=answer["id_token"],
                    keys_url=config.get("jwks_uri", ""),
                    issuer=config.get("issuer"),
                    audience=settings.OIDC_CLIENT_ID,
                    lookup_kid=jwtkit.lookup_kid_jwk,
                    verify_signature=False,
                )
            except OAuth2Error as exc:
                return Refresh(FAILED, f"the refreshed ID token is not valid: {exc}")
    elif token.expires_at is not None and token.expires_at <= timezone.now():
        return Refresh(
            FAILED,
            "the identity provider gave no refresh token (is offline_access in OIDC_SCOPES?) and the last access token "
            "has expired; sign in to the portal once",
        )
    try:
        response = requests.get(
            config["userinfo_endpoint"], headers={"Authorization": f"Bearer {token.token}"}, timeout=HTTP_TIMEOUT
        )
    except requests.RequestException as exc:
        return Refresh(FAILED, f"the identity provider's userinfo did not answer: {exc.__class__.__name__}")
    userinfo = _json(response)
    if response.status_code != 200 or not userinfo:
        return Refresh(FAILED, f"the identity provider's userinfo answered HTTP {response.status_code}")
    claims = {**id_claims, **userinfo}
    if str(claims.get("sub", "")) != account.uid:
        return Refresh(FAILED, "the identity provider answered for another subject")
    extra_data = {**(account.extra_data or {}), "userinfo": userinfo}
    if id_claims:
        extra_data["id_token"] = id_claims
    return claims, extra_data


def _json(response) -> dict:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def ensure_recent_identity(user):
    """Return `user` freshly loaded, their identity no older than
    JIT_IDENTITY_MAX_AGE; raise IdentityError if it cannot be.

    For decisions made off the browser (API token, Slack button), where the
    person's groups and state might otherwise be as old as their last sign-in.
    """
    max_age = settings.JIT_IDENTITY_MAX_AGE
    if _account(user) is not None and not _is_recent(user, max_age):
        result = refresh_identity(user, unless_newer_than=max_age)
        if result.outcome == GONE:
            raise IdentityError(
                "your account was deactivated: the identity provider no longer accepts it.", temporary=False
            )
        if result.outcome == FAILED:
            raise IdentityError(
                f"your rights could not be checked with the identity provider ({result.message}); try again in "
                "a moment.",
                temporary=True,
            )
    fresh = get_user_model().objects.get(pk=user.pk)
    if not fresh.is_active:
        raise IdentityError("your account is deactivated.", temporary=False)
    return fresh


def deactivate_user(user, *, reason: str):
    """Deactivate an account the IdP no longer accepts; its
    tokens stop working and `user_deactivated` ends its access."""
    User = get_user_model()
    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        if not locked.is_active:
            return
        locked.is_active, locked.deactivated_by_idp_at = False, timezone.now()
        locked.save(update_fields=["is_active", "deactivated_by_idp_at"])
        audit.record("user.deactivated", obj=locked, details={"user": locked.username, "reason": reason})
    user.is_active, user.deactivated_by_idp_at = False, locked.deactivated_by_idp_at
    log.warning("Deactivated %s: %s.", locked.username, reason)
    # After the commit: the account stays deactivated even if ending its access fails here.
    user_deactivated.send(sender=User, user=locked, reason=reason)


def users_due(now=None):
    """Return the active users holding a refresh token whose identity is older than JIT_IDENTITY_SYNC_INTERVAL.

    Oldest first; one whose last attempt failed waits an interval too.
    """
    now = now or timezone.now()
    cutoff = now - datetime.timedelta(seconds=settings.JIT_IDENTITY_SYNC_INTERVAL)
    accounts = SocialAccount.objects.filter(provider=settings.OIDC_PROVIDER_ID, socialtoken__token_secret__gt="")
    users = get_user_model().objects.filter(is_active=True, pk__in=accounts.values("user_id"))
    users = users.exclude(identity_refreshed_at__gt=cutoff).exclude(identity_checked_at__gt=cutoff)
    return users.order_by(F("identity_refreshed_at").asc(nulls_first=True), "pk")


def sync_identities(*, time_budget: float | None = None) -> dict[str, int]:
    """Refresh every identity that is due; return how many had each outcome.

    One person failing does not stop the others. With `time_budget`
    (seconds) it stops starting new refreshes after that long; the next run
    continues with the oldest.
    """
    counts = {REFRESHED: 0, GONE: 0, FAILED: 0, NOT_APPLICABLE: 0}
    if not settings.OIDC_ISSUER:
        return counts
    started = time.monotonic()
    for user in users_due():
        if time_budget is not None and time.monotonic() - started > time_budget:
            break
        try:
            result = refresh_identity(user, unless_newer_than=settings.JIT_IDENTITY_SYNC_INTERVAL)
        except Exception:
            log.exception("Refreshing the identity of %s failed", user.username)
            result = Refresh(FAILED)
        counts[result.outcome] += 1
    if counts[GONE] or counts[FAILED]:
        log.info("Identity sync: %s", ", ".join(f"{n} {k}" for k, n in counts.items() if n))
    return counts
