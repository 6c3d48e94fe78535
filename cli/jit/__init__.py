"""A small client for jitportal's JSON API (/api/v1/), standard library only.

Configuration: the environment variables JIT_URL (the portal, e.g.
https://jit.example.com) and JIT_TOKEN (a personal API token), or the same
as `url = ...` and `token = ...` lines in ~/.config/jit/config
($XDG_CONFIG_HOME/jit/config); the environment wins.

The token travels only over HTTPS (plain HTTP only to this machine) and
only to the portal's own origin: a redirect elsewhere is followed without it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

__version__ = "1.0.0"

USER_AGENT = f"jit-cli/{__version__}"


class ConfigError(Exception):
    """The URL or the token is missing or malformed."""


class ApiError(Exception):
    """The portal refused (a 4xx/5xx with its JSON error), or could not be reached (status 0)."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.retry_after = status, code, message, field, retry_after


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "jit" / "config"


def read_config(environ=None, path: Path | None = None) -> tuple[str, str]:
    """Return (url, token) from the environment, else from the config file; raise ConfigError."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    path = path or config_path()
    if path.is_file():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep:
                raise ConfigError(f"{path}, line {number}: write 'url = ...' or 'token = ...'.")
            values[key.strip().lower()] = value.strip().strip("'\"")
    url = environ.get("JIT_URL") or values.get("url", "")
    token = environ.get("JIT_TOKEN") or values.get("token", "")
    if not url or not token:
        missing = " and ".join(name for name, value in (("JIT_URL", url), ("JIT_TOKEN", token)) if not value)
        raise ConfigError(
            f"Set {missing} (or put 'url = ...' and 'token = ...' in {path}); make a token on the portal's API "
            "tokens page."
        )
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"JIT_URL must start with https:// (or http:// for a local portal), not {url!r}.")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(
            f"JIT_URL must use https:// ({url!r} would send your token in clear text); "
            "http:// is only for a portal on this machine (localhost, 127.0.0.1, ::1)."
        )
    return url.rstrip("/"), token


def is_loopback(host: str) -> bool:
    """Return whether `host` names this machine (localhost or a loopback address), where plain HTTP stays local."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but send the token only to the origin it was meant for.

    urllib copies every header to the redirected request, so a portal (or a
    proxy in front of it) redirecting elsewhere would hand the token to that
    host, over plain HTTP too.
    """

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and origin(new.full_url) != origin(req.full_url):
            new.remove_header("Authorization")
        return new


_opener = urllib.request.build_opener(_SameOriginRedirects)


class Client:
    """Calls /api/v1/ with the token; returns decoded JSON or raises ApiError."""

    def __init__(self, url: str, token: str, *, timeout: float = 30):
        self.base = url.rstrip("/") + "/api/v1"
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        request.add_header("User-Agent", USER_AGENT)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with _opener.open(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise self._error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(0, "unreachable", f"Cannot reach the portal at {self.base}: {reason}.") from None

    @staticmethod
    def _error(exc: urllib.error.HTTPError) -> ApiError:
        raw = exc.read()
        retry = exc.headers.get("Retry-After") if exc.headers else None
        retry_after = int(retry) if retry and retry.isdigit() else None
        try:
            body = json.loads(raw)
            return ApiError(exc.code, body["code"], body["message"], body.get("field"), retry_after)
        except (ValueError, KeyError, TypeError):
            return ApiError(exc.code, "http_error", f"The portal answered {exc.code} {exc.reason}.", None, retry_after)

    def get(self, path: str):
        return self.call("GET", path)

    def post(self, path: str, body: dict | None = None):
        return self.call("POST", path, body if body is not None else {})
