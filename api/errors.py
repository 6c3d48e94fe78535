"""The API's one error: `{"code", "message", "field"?, "errors"?}` with a stable `code` (the table in api/views.py)."""

from __future__ import annotations

CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "not_allowed",
    404: "not_found",
    405: "invalid",
    409: "conflict",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, field: str | None = None, errors=None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.errors = errors
        self.headers = headers or {}


def not_found(pk) -> ApiError:
    # As on the pages: outsiders cannot tell a request they may not see from one that does not exist.
    return ApiError(404, "not_found", f"There is no request #{pk} that you may see.")


def rate_limited(seconds: int, message: str) -> ApiError:
    return ApiError(429, "rate_limited", f"{message} Try again in {seconds} s.", headers={"Retry-After": str(seconds)})


def invalid(errors: list[tuple[str | None, str]]) -> ApiError:
    """Return the 400 for every field at fault: `field` names the first, `errors` lists them all."""
    field, message = errors[0]
    if len(errors) > 1:
        message = "; ".join(m.rstrip(".") for _, m in errors) + "."
    return ApiError(400, "invalid", message, field=field, errors=[{"field": f, "message": m} for f, m in errors])
