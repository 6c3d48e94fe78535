"""The connector interface: how the portal talks to a target.

A connector is a reconciliation, not a delta: provisioning twice gives the
same state on the target, revoking what is already gone succeeds. A
connector never touches the portal's database or any status field; the
lifecycle does that with what the connector returns or raises.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True)
class RequestField:
    """A request-form field a target kind takes (the API takes it under the same name)."""

    label: str
    help_text: str = ""
    multiline: bool = False
    max_length: int = 10000


class ConnectorError(Exception):
    """A target refused or could not be reached.

    `permanent` says that retrying cannot help (bad configuration, a group
    role that does not exist); otherwise the caller retries with backoff.
    """

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.message = message
        self.permanent = permanent


@dataclasses.dataclass(frozen=True)
class Provisioned:
    external_ref: str
    credentials: dict[str, str]
    expires_at: datetime.datetime


class TargetLike(Protocol):
    name: str
    kind: str
    config: dict[str, Any]
    secret_env: str


class GrantLike(Protocol):
    pk: int
    expires_at: datetime.datetime
    scope: dict[str, Any]


def secret_from_env(name: str) -> str:
    """Return the secret in environment variable `name`, or in the file `name`_FILE names ("" if neither is set)."""
    value = os.environ.get(name, "")
    if not value and os.environ.get(name + "_FILE"):
        try:
            with open(os.environ[name + "_FILE"], encoding="utf-8") as fh:
                value = fh.read().strip()
        except OSError as exc:
            raise ConnectorError(f"Cannot read {name}_FILE: {exc.strerror}.", permanent=True) from None
    return value


class Connector:
    """Base class; one subclass per target kind, registered in `connectors.REGISTRY`."""

    # Whether `extend()` can move an expiry without new credentials.
    extends_in_place = False
    # Names on the target are prefix + "g" + grant id; each kind says which
    # prefixes its names allow (e.g. a server's length limit).
    default_prefix = "jit_"
    prefix_pattern = re.compile(r"[a-z_][a-z0-9_]{0,39}")
    prefix_rule = "lowercase letters, digits and _ (at most 40)"

    @property
    def prefix(self) -> str:
        prefix = self.target.config.get("prefix", self.default_prefix)
        if not isinstance(prefix, str) or not self.prefix_pattern.fullmatch(prefix):
            raise ConnectorError(
                f"Target {self.target.name!r}: prefix {prefix!r} must be {self.prefix_rule}.", permanent=True
            )
        return prefix

    def account_name(self, grant: GrantLike) -> str:
        """Return the name of a grant's account on the target: prefix + "g" + grant id, never user input."""
        return f"{self.prefix}g{int(grant.pk)}"

    def __init__(self, target: TargetLike):
        self.target = target
        self._connect_failure: Exception | None = None
        # What revocation found that the grant's account made or granted on the
        # target, by grant pk: [{"database", "kind", "name", "action"}, ...]
        # ("action": "dropped", "revoked", "reassigned to <role>", "reported").
        # The lifecycle takes it (`take_inventory`) into the grant's audit event
        # and a drift finding an admin reviews.
        self.inventory: dict[int, list[dict[str, str]]] = {}
        # What the target kept about each grant's account, read by `revoke_many` before the account goes,
        # by grant pk (grants/activity.py builds the digests). Kinds whose target keeps nothing leave it
        # empty; a failed read is an "unavailable" digest, never a failed revocation. The lifecycle takes
        # the digests of the grants it marks revoked (`take_activity`).
        self.activity: dict[int, dict] = {}

    def note_object(self, grant_pk: int, *, kind: str, name: str, action: str, database: str = "") -> None:
        """Record one object revocation found for a grant (see `inventory`)."""
        self.inventory.setdefault(int(grant_pk), []).append(
            {"database": database, "kind": kind, "name": name, "action": action}
        )

    def take_inventory(self, grant_pk: int) -> list[dict[str, str]]:
        """Return and forget what revocation found for one grant."""
        return self.inventory.pop(int(grant_pk), [])

    def take_activity(self, grant_pks) -> dict[int, dict]:
        """Return and forget the activity digests read for these grants (see `activity`)."""
        return {int(pk): self.activity.pop(int(pk)) for pk in grant_pks if int(pk) in self.activity}

    def connect_once(self, connect):
        """Return `connect()`; once it has failed, raise that failure again at once, without a round trip.

        A circuit breaker for the life of this instance (one task, or one
        pass of the sweep over a target): a target that is down or hangs
        costs one connect timeout per pass, not one per grant. Each
        connector's own error handling turns the failure into its
        ConnectorError, as for the first attempt.
        """
        self.fail_fast()
        try:
            return connect()
        except Exception as exc:
            self.trip(exc)
            raise

    def fail_fast(self) -> None:
        """Raise at once the failure that made this instance give up on its target, if one did (see `trip`)."""
        if self._connect_failure is not None:
            raise self._connect_failure

    def trip(self, error: Exception) -> Exception:
        """Remember that the target could not be reached (refused, reset, timed out); return `error`.

        For connectors whose client connects lazily (on the first command or
        request): their error handling calls this for transport failures, and
        `fail_fast` before each call, so they get the same breaker as
        `connect_once`. Errors the server answered with (a refusal, a missing
        object) do not trip it: the target is there.
        """
        self._connect_failure = error
        return error

    # Connectors may hold a connection to the target; callers use
    # `with get_connector(target) as c:` so it is closed after a batch.
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        pass

    def admin_secret(self) -> str:
        """Return the admin secret from the environment variable named by the target."""
        name = self.target.secret_env
        if not name:
            raise ConnectorError(
                f"Target {self.target.name!r} names no environment variable for its admin secret.", permanent=True
            )
        value = secret_from_env(name)
        if not value:
            raise ConnectorError(
                f"Environment variable {name} (admin secret of target {self.target.name!r}) is not set.", permanent=True
            )
        return value

    # Extra request fields this kind takes (name -> field); their values reach
    # `clean_params`. The form shows them only for profiles of this kind.
    request_fields: dict[str, RequestField] = {}

    def clean_params(self, params: dict) -> dict:
        """Return the request parameters this kind uses, cleaned; raise ValueError({field: message})."""
        return {}

    def provision(self, grant: GrantLike) -> Provisioned:
        raise NotImplementedError

    def revoke(self, grant: GrantLike) -> None:
        raise NotImplementedError

    def extend(self, grant: GrantLike) -> None:
        """Move the target's own expiry to `grant.expires_at` without new credentials."""
        raise ConnectorError(f"Targets of kind {self.target.kind!r} cannot extend access in place.", permanent=True)

    def is_present(self, grant: GrantLike) -> bool:
        """Read the target again: is anything of this grant still there (account or session)?"""
        raise NotImplementedError

    def revoke_many(self, grants: list[GrantLike]) -> dict[int, str]:
        """Revoke several grants; return {grant pk: error message} for those that failed.

        This default calls `revoke` for each; a connector that can do a batch
        in fewer round trips overrides it. A permanent error still raises.
        """
        errors = {}
        for grant in grants:
            try:
                self.revoke(grant)
            except ConnectorError as exc:
                if exc.permanent:
                    raise
                errors[grant.pk] = exc.message
        return errors

    def present_many(self, grants: list[GrantLike]) -> set[int]:
        """Read the target again; return the pks of the grants of which anything is still there."""
        return {grant.pk for grant in grants if self.is_present(grant)}

    def list_managed(self) -> set[str]:
        raise NotImplementedError

    def check(self) -> list[str]:
        """Raise ConnectorError if unreachable or misconfigured; return warnings."""
        raise NotImplementedError

    @classmethod
    def config_errors(cls, config: dict) -> list[str]:
        """Return what is wrong with a target's config, read without the target (`catalog plan` lists them)."""
        return []

    @classmethod
    def scope_errors(cls, scope: dict) -> list[str]:
        """Return what is wrong with a profile's scope, read without the target (`catalog plan` lists them)."""
        return []

    def validate_scope(self, scope: dict) -> list[str]:
        """Read the target and refuse a scope that would hand out more than a grant may (superuser, admin roles).

        Raise ConnectorError(permanent=True) naming what to fix; a transient
        error if the target cannot be read. Return warnings (what the scope
        lets a user leave behind, say). `catalog plan` and provisioning call it.
        """
        return []
