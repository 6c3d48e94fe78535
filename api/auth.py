"""Token authentication: `Authorization: Bearer jit_...` (tokens: accounts/tokens.py); no session, no cookie."""

from __future__ import annotations

from ninja.security import HttpBearer

from accounts import tokens
from accounts.ratelimit import client_ip

from . import ratelimits
from .errors import ApiError


class TokenAuth(HttpBearer):
    """`Authorization: Bearer jit_...`; too many failures from one address lock it out for the rest of the minute.

    The class name is the OpenAPI document's security scheme ("TokenAuth"): keep it.
    """

    def __call__(self, request):
        header = request.headers.get("Authorization", "")
        if not header:
            raise ApiError(
                401,
                "unauthorized",
                "Send your API token as 'Authorization: Bearer <token>'; make one on the API tokens page.",
            )
        ip = client_ip(request)
        ratelimits.refuse_locked_out_address(ip)
        scheme, _, secret = header.partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise tokens.InvalidTokenError("Use 'Authorization: Bearer <token>'.")
            token = tokens.authenticate(secret)
        except tokens.InvalidTokenError as exc:
            ratelimits.count_token_failure(ip)
            raise ApiError(401, "unauthorized", str(exc)) from None
        request.api_token = token
        return token.user

    def authenticate(self, request, token):  # pragma: no cover - __call__ does it all
        raise NotImplementedError
