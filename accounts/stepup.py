"""Step-up: a fresh sign-in at the moment of risk (README "Step-up").

The portal sends the person through the IdP again (allauth's OpenID Connect
provider, process "redirect": no new login, no new session) with `max_age`,
`acr_values` where configured, and a nonce of our own. When the IdP sends
them back, `record_from_idp` (called by the social account adapter) checks
that the ID token is for the person signed in here and for this step-up, and
keeps its `auth_time`, `acr` and `amr` in the session: the evidence. The
action waits meanwhile in the session too (`stash`/`take`), so that it goes
through when they are back, without anything typed again.

People without an IdP login (demo mode, the emergency superuser) re-enter
their password instead, throttled and audited like the emergency login.
"""

from __future__ import annotations

import dataclasses
import datetime
import secrets
import time

from allauth.socialaccount.adapter import get_adapter as get_social_adapter
from allauth.socialaccount.providers.base import AuthProcess
from django.conf import settings
from django.http import HttpResponseRedirect
from django.utils import timezone
from django.utils.http import urlencode

import audit

from . import login

# Seconds added to STEP_UP_MAX_AGE for the round trip back from the IdP and for
# clock skew between it and the portal: with STEP_UP_MAX_AGE=0 the IdP always
# asks again, and the sign-in it answers with counts for this long.
GRACE = 60
PENDING_TTL = 600  # seconds an action waits for its step-up (allauth keeps its state as long)
MAX_PENDING = 5
EVIDENCE_KEY, PENDING_KEY = "jit_step_up", "jit_step_up_pending"


@dataclasses.dataclass(frozen=True)
class StepUp:
    """A fresh sign-in: at the IdP (method "idp") or by re-entering the password (method "password")."""

    method: str
    auth_time: int  # seconds since the epoch, the IdP's `auth_time` (or when the password was checked)
    acr: str = ""
    amr: tuple[str, ...] = ()

    def details(self) -> dict:
        """Return what the audit event of the action it allowed records of it."""
        when = datetime.datetime.fromtimestamp(self.auth_time, tz=datetime.UTC)
        return {"method": self.method, "auth_time": when.isoformat(), "acr": self.acr, "amr": list(self.amr)}


def uses_idp(user) -> bool:
    """Return whether `user` steps up at the IdP (else: by re-entering their password)."""
    if not settings.OIDC_ISSUER:
        return False  # demo mode
    return user.socialaccount_set.filter(provider=settings.OIDC_PROVIDER_ID).exists()


def problem(step_up: StepUp | None, *, now: float | None = None) -> str | None:
    """Return why `step_up` is not fresh enough evidence for a risky action now, as a clause, or None."""
    if step_up is None:
        return "sign in again first"
    now = time.time() if now is None else now
    age = now - step_up.auth_time
    if age > settings.STEP_UP_MAX_AGE + GRACE:
        return f"your last sign-in was {int(age // 60)} minutes {int(age % 60)} seconds ago; sign in again"
    if step_up.method != "idp":
        return None  # no IdP to vouch for a second factor: demo mode, or the emergency account
    if settings.STEP_UP_ACR_VALUES and step_up.acr not in settings.STEP_UP_ACR_VALUES:
        wanted = " or ".join(settings.STEP_UP_ACR_VALUES)
        return f"the identity provider says you signed in with {step_up.acr or 'no acr'}, not {wanted}"
    if settings.STEP_UP_AMR_VALUES and not set(step_up.amr) & set(settings.STEP_UP_AMR_VALUES):
        wanted = " or ".join(settings.STEP_UP_AMR_VALUES)
        return f"the identity provider says you signed in with {', '.join(step_up.amr) or 'no amr'}, not {wanted}"
    return None


def current(request) -> StepUp | None:
    """Return the latest step-up of the person signed in to this session, or None."""
    kept = request.session.get(EVIDENCE_KEY)
    if not isinstance(kept, dict) or kept.get("user") != request.user.pk:
        return None
    return StepUp(kept["method"], int(kept["auth_time"]), kept.get("acr", ""), tuple(kept.get("amr", ())))


def _keep(request, step_up: StepUp, *, action: str):
    request.session[EVIDENCE_KEY] = {"user": request.user.pk, **dataclasses.asdict(step_up)}
    audit.record(
        "user.step_up",
        actor=request.user,
        obj=request.user,
        details={"user": request.user.username, "for": action, **step_up.details()},
    )


def _refused(request, reason: str, *, action: str, details: dict | None = None):
    audit.record(
        "user.step_up_refused",
        actor=request.user,
        obj=request.user,
        details={"user": request.user.username, "for": action, "reason": reason, **(details or {})},
    )


# The action waiting for it ---------------------------------------------------------------------------------


def stash(request, action: dict) -> str:
    """Keep `action` (a JSON-able dict with a "kind") until the person is back; return its key."""
    now = time.time()
    waiting = {k: v for k, v in (request.session.get(PENDING_KEY) or {}).items() if now - v["at"] < PENDING_TTL}
    for old in sorted(waiting, key=lambda k: waiting[k]["at"])[: max(0, len(waiting) - MAX_PENDING + 1)]:
        del waiting[old]
    key = secrets.token_urlsafe(16)
    waiting[key] = {"user": request.user.pk, "at": now, "action": action}
    request.session[PENDING_KEY] = waiting
    return key


def peek(request, key: str) -> dict | None:
    """Return the action waiting under `key` for this person, or None (done, expired, someone else's)."""
    found = (request.session.get(PENDING_KEY) or {}).get(key)
    if not found or found["user"] != request.user.pk or time.time() - found["at"] >= PENDING_TTL:
        return None
    return found["action"]


def take(request, key: str) -> dict | None:
    """Return the action waiting under `key` for this person and forget it, or None."""
    action = peek(request, key)
    waiting = request.session.get(PENDING_KEY) or {}
    if key in waiting:
        del waiting[key]
        request.session[PENDING_KEY] = waiting
    return action


# Through the IdP -------------------------------------------------------------------------------------------


def begin(request, *, next_url: str, action: str, password_url: str):
    """Send the person to sign in again, then to `next_url`; `action` names what it is for (the trail says)."""
    if not uses_idp(request.user):
        return HttpResponseRedirect(f"{password_url}?{urlencode({'next': next_url, 'for': action})}")
    provider = get_social_adapter(request).get_provider(request, settings.OIDC_PROVIDER_ID)
    nonce = secrets.token_urlsafe(16)
    params = {"max_age": str(settings.STEP_UP_MAX_AGE), "nonce": nonce}
    if settings.STEP_UP_ACR_VALUES:
        params["acr_values"] = " ".join(settings.STEP_UP_ACR_VALUES)
    data = {"jit_step_up": {"nonce": nonce, "user": request.user.pk, "for": action}}
    return provider.redirect(request, AuthProcess.REDIRECT, next_url=next_url, data=data, auth_params=params)


def record_from_idp(request, sociallogin) -> None:
    """Keep the evidence of a step-up the IdP answered, if it is one: same person, our nonce, an auth_time."""
    mark = ((sociallogin.state or {}).get("data") or {}).get("jit_step_up")
    if not mark or not request.user.is_authenticated:
        return
    claims = (sociallogin.account.extra_data or {}).get("id_token") or {}
    action = str(mark.get("for", ""))
    if mark.get("user") != request.user.pk or not sociallogin.is_existing or sociallogin.user.pk != request.user.pk:
        # Someone else signed in at the IdP in this browser: nothing is done as the person signed in here.
        _refused(
            request,
            "signed in at the identity provider as someone else",
            action=action,
            details={"idp_subject": str(claims.get("sub", ""))},
        )
        return
    if not secrets.compare_digest(str(claims.get("nonce", "")), str(mark.get("nonce", ""))):
        _refused(request, "the ID token is not the answer to this step-up (nonce)", action=action)
        return
    if not isinstance(claims.get("auth_time"), int | float):
        _refused(request, "the identity provider sent no auth_time", action=action)
        return
    amr = claims.get("amr") or []
    step_up = StepUp(
        "idp",
        int(claims["auth_time"]),
        str(claims.get("acr") or ""),
        tuple(str(a) for a in amr) if isinstance(amr, list) else (str(amr),),
    )
    _keep(request, step_up, action=action)


def confirm_password(request, password: str, *, action: str) -> str | None:
    """Check the password of the person signed in (throttled as the emergency login); return why not, or None."""
    wait = login.login_wait(request, request.user.get_username())
    if wait:
        return login.wait_message(wait)
    if not request.user.check_password(password):
        # Counted with the emergency login's failures: someone at an unlocked screen guesses no faster here.
        login.count_login_failure(request, request.user.get_username())
        _refused(request, "wrong password", action=action, details=login.request_facts(request))
        return "That is not your password."
    _keep(request, StepUp("password", int(timezone.now().timestamp())), action=action)
    return None
