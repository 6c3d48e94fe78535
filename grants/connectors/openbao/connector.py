"""OpenBao / HashiCorp Vault connector: a token per grant that the server itself ends at expiry.

The target enforces expiry: the grant's token has a TTL and an explicit
maximum TTL that end at `expires_at` and is not renewable, so the server
refuses it from then on even if the portal's workers are down. Token
children die with their parent (when it expires or is revoked); a grant's
token is refused any way to make tokens that do not (see `validate_scope`).
The same HTTP API serves OpenBao and Vault; both work.

Per grant the portal writes a token role `<prefix>g<grant id>` (never user
input): orphan (revoking the portal's own token does not revoke the
grant's), not renewable, its allowed policies exactly the scope's, its
explicit maximum TTL the grant's. The grant's token is created through that
role, so every token ever issued for the grant sits under one lease prefix,
`auth/token/create/<role>`: revocation deletes the role, revokes the prefix
(which revokes each token and its children) and lists the prefix again to
verify; provisioning twice revokes what the first attempt issued. The
reconciler lists the roles and the lease prefixes that look like ours.
The token itself is returned once in the credentials, never kept; its
accessor goes with it, and the token carries `meta` naming the grant, which
the server's audit log shows.

Target config: `url` (e.g. https://bao.internal:8200, what the portal and
users talk to), optional `namespace`, `ca_file` (a CA bundle to verify the
server's certificate) and `prefix` (default "jit_"). The admin token comes
from the environment variable named by `target.secret_env`; a periodic
token is renewed by the target check.

Grant scope: `policies` (required; not `root`) and optional
`no_default_policy`. `validate_scope` (at `catalog plan` and, on the very
token handed out, at every provisioning) asks the server what a token with
those policies may do on the paths that would let it outlive the grant:
orphan tokens (sudo on auth/token/create-orphan or auth/token/create, use of
an orphan token role), new token roles, policy writes, auth methods and
their users, roles and secret IDs, identity entities and groups, plugins,
audit devices, raw storage. Any of those refuses the scope.

The token's lifetime is also capped by the server's maximum TTL
(`max_lease_ttl` of the token mount or the system); a grant longer than that
ends when the server says, and the portal records that expiry.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import re
import secrets
import shlex
from urllib.parse import quote, urlsplit

import requests

from ..base import Connector, ConnectorError, GrantLike, Provisioned

# (connect, read) seconds: a worker must not hang on a server that stopped answering.
TIMEOUT = (5, 30)
# Lifetime of the token `validate_scope` makes to ask the server about a scope.
PROBE_TTL_S = 60
# A non-periodic admin token closer to its end than this gets a warning.
ADMIN_TOKEN_WARN_S = 7 * 86400

SCOPE_FIELDS = {"policies", "no_default_policy"}
# Policy names go into request paths: a conservative alphabet.
_POLICY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@=+-]{0,127}")
_WRITE = frozenset({"create", "update"})
_EVERYTHING = frozenset({"create", "read", "update", "delete", "list", "sudo", "patch"})
# A name no real object has: paths a policy covers with a glob match it.
_PROBE = "jitportal-probe"
_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_./-]{1,200}")


class OpenBaoConnector(Connector):
    """Issue per-grant tokens on OpenBao or Vault through a per-grant token role, and revoke them by prefix."""

    # A token's explicit maximum TTL cannot be raised: a longer grant needs a new token.
    extends_in_place = False

    def __init__(self, target):
        super().__init__(target)
        self._http: requests.Session | None = None
        self._token: str | None = None
        self._hide: list[str] = []

    # -- interface ----------------------------------------------------------

    def provision(self, grant: GrantLike) -> Provisioned:
        """Issue the grant's token (revoking any an earlier attempt issued) and check what it may do."""
        policies, no_default = self._parse_scope(grant.scope)
        role = self.account_name(grant)
        expires_at = grant.expires_at
        if expires_at is None or expires_at.tzinfo is None:
            raise ValueError("grant.expires_at must be timezone-aware")
        with self._errors("provision " + role):
            self._require_policies(policies)
            seconds = math.floor((expires_at - _now()).total_seconds())
            if seconds < 1:
                raise ConnectorError(f"Grant {grant.pk} has already expired; no token issued.", permanent=True)
            # Reconcile: a token from an attempt that crashed before it was recorded goes first.
            self._revoke_prefix(role)
            self._write_role(role, policies, no_default, seconds)
            auth = self._create_token(
                role,
                policies,
                no_default,
                seconds,
                meta={
                    "jitportal_grant": str(int(grant.pk)),
                    "jitportal_target": self.target.name,
                },
            )
            issued_at = _now()
            try:
                self._require_shape(auth)
                self._refuse_escapes(auth["accessor"], policies, no_default)
            except BaseException:
                # Keep the refusal as the error: a token left by a failed
                # removal is the reconciler's (its grant is not active).
                with contextlib.suppress(ConnectorError):
                    self._remove(role)
                raise
        # The server counts from its own creation time, which is before
        # `issued_at`: the portal's expiry is never earlier than the server's.
        expires = min(expires_at, issued_at + datetime.timedelta(seconds=int(auth["lease_duration"])))
        return Provisioned(
            external_ref=role, credentials=self._credentials(auth, policies, expires), expires_at=expires
        )

    def extend(self, grant: GrantLike) -> None:
        """Refuse: a token's explicit maximum TTL cannot be raised; the holder needs a new token."""
        raise ConnectorError(
            "An OpenBao/Vault token's explicit maximum TTL cannot be raised; request new access for a new token.",
            permanent=True,
        )

    def revoke(self, grant: GrantLike) -> None:
        """Delete the grant's token role, revoke every token issued through it (children too), and look again."""
        role = self.account_name(grant)
        with self._errors("revoke " + role):
            self._remove(role)
            left = self._leases(role)
            if left:
                raise ConnectorError(f"{len(left)} token(s) of {role} are still there after revocation; will retry.")
            if self._role_exists(role):
                raise ConnectorError(f"Token role {role} is still there after deletion; will retry.")

    def is_present(self, grant: GrantLike) -> bool:
        """Read the server again: does the grant's token role, or any token issued through it, still exist?"""
        role = self.account_name(grant)
        with self._errors("inspect " + role):
            return self._role_exists(role) or bool(self._leases(role))

    def list_managed(self) -> set[str]:
        """Return the token roles, and the lease prefixes of tokens, that look like ours (prefix + "g" + digits)."""
        with self._errors("list token roles"):
            names = set(self._list("auth/token/roles"))
            # A token whose role is gone (a revocation that stopped halfway) still sits under its prefix.
            names |= {
                key.rstrip("/") for key in self._list("sys/leases/lookup/auth/token/create/") if key.endswith("/")
            }
        # The reconciler revokes what we return: never a hand-made role such as
        # "jit_gadmin" that merely shares the prefix.
        pattern = re.compile(re.escape(self.prefix + "g") + r"[0-9]+")
        return {name for name in names if pattern.fullmatch(name)}

    def check(self) -> list[str]:
        """Verify the server is unsealed and the admin token may do what the connector does; renew a periodic one."""
        warnings = []
        with self._errors("check"):
            status = self._call("GET", "sys/seal-status", authenticated=False)
            if not status.get("initialized", True):
                raise ConnectorError(f"Target {self.target.name!r} is not initialized.", permanent=True)
            if status.get("sealed"):
                raise ConnectorError(f"Target {self.target.name!r} is sealed: unseal it.")
            me = self._call("GET", "auth/token/lookup-self").get("data") or {}
            policies = me.get("policies") or []
            if "root" in policies:
                warnings.append(
                    "The admin token is a root token: give the portal a token with the policy in the README's"
                    " OpenBao set-up instead."
                )
            else:
                missing = self._admin_lacks()
                if missing:
                    raise ConnectorError(
                        f"The admin token of target {self.target.name!r} lacks {'; '.join(missing)}"
                        " (see the README's OpenBao set-up).",
                        permanent=True,
                    )
            ttl, period = int(me.get("ttl") or 0), _seconds(me.get("period"))
            if period and me.get("renewable"):
                renewed = self._call("POST", "auth/token/renew-self", json={"increment": f"{period}s"})
                ttl = int((renewed.get("auth") or {}).get("lease_duration") or ttl)
            elif ttl and ttl < ADMIN_TOKEN_WARN_S:
                warnings.append(
                    f"The admin token expires in {ttl // 3600} h and is not periodic: the portal stops working then."
                    " Use a periodic token (bao token create -orphan -period=24h -policy=jitportal), which the"
                    " target check renews."
                )
        return warnings

    def validate_scope(self, scope: dict) -> list[str]:
        """Refuse a scope whose token could outlive the grant or administer the server; ask the server itself.

        The policies must exist; a short-lived token with exactly those
        policies is made through a throwaway token role and the server says
        what it may do on the paths that matter (see the module docstring).
        Raises ConnectorError(permanent=True) naming the path and why.
        """
        policies, no_default = self._parse_scope(scope)
        role = f"{self.prefix}check_{secrets.token_hex(4)}"
        with self._errors("check the scope"):
            self._require_policies(policies)
            self._write_role(role, policies, no_default, PROBE_TTL_S)
            try:
                auth = self._create_token(role, policies, no_default, PROBE_TTL_S, meta={"jitportal_check": "scope"})
                self._refuse_escapes(auth["accessor"], policies, no_default)
            finally:
                self._remove(role)
        return []

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # -- tokens and roles -----------------------------------------------------

    def _write_role(self, role: str, policies: list[str], no_default: bool, seconds: int) -> None:
        self._call(
            "POST",
            f"auth/token/roles/{role}",
            json={
                "allowed_policies": policies,
                "orphan": True,
                "renewable": False,
                "token_type": "service",
                "token_explicit_max_ttl": seconds,
                "token_no_default_policy": no_default,
                "token_period": 0,
                "token_num_uses": 0,
                "path_suffix": "",
            },
        )

    def _create_token(self, role: str, policies: list[str], no_default: bool, seconds: int, *, meta: dict) -> dict:
        answer = self._call(
            "POST",
            f"auth/token/create/{role}",
            json={
                "policies": policies,
                "ttl": f"{seconds}s",
                "explicit_max_ttl": f"{seconds}s",
                "renewable": False,
                "no_default_policy": no_default,
                "type": "service",
                "display_name": role,
                "meta": meta,
            },
        )
        auth = answer.get("auth") or {}
        if not auth.get("client_token") or not auth.get("accessor"):
            raise ConnectorError(f"Target {self.target.name!r} answered a token request without a token.")
        self._hide.append(auth["client_token"])
        return auth

    def _require_shape(self, auth: dict) -> None:
        """Refuse a token the server made otherwise than asked (a role or mount setting overriding ours)."""
        wrong = []
        if auth.get("renewable"):
            wrong.append("renewable")
        if not auth.get("orphan"):
            wrong.append("not an orphan")
        if auth.get("token_type", "service") != "service":
            wrong.append(f"a {auth.get('token_type')} token")
        if int(auth.get("lease_duration") or 0) <= 0:
            wrong.append("without a TTL")
        if "root" in (auth.get("policies") or []):
            wrong.append("with the root policy")
        if wrong:
            raise ConnectorError(
                f"Target {self.target.name!r} issued a token {', '.join(wrong)}; refusing it.", permanent=True
            )

    def _remove(self, role: str) -> None:
        """Delete the role first (no new token through it), then revoke every token issued through it."""
        self._call("DELETE", f"auth/token/roles/{role}")
        self._revoke_prefix(role)

    def _revoke_prefix(self, role: str) -> None:
        # The server adds the trailing "/" itself: jit_g4 never covers jit_g42.
        self._call("POST", f"sys/leases/revoke-prefix/auth/token/create/{role}", json={"sync": True})

    def _leases(self, role: str) -> list[str]:
        return self._list(f"sys/leases/lookup/auth/token/create/{role}/")

    def _role_exists(self, role: str) -> bool:
        return self._call("GET", f"auth/token/roles/{role}", missing_ok=True) is not None

    def _credentials(self, auth: dict, policies: list[str], expires: datetime.datetime) -> dict[str, str]:
        url = self._base_url()
        token = auth["client_token"]
        env = [
            f"export BAO_ADDR={shlex.quote(url)}",
            f"export BAO_TOKEN={shlex.quote(token)}",
            f"export VAULT_ADDR={shlex.quote(url)}",
            f"export VAULT_TOKEN={shlex.quote(token)}",
        ]
        namespace = self._namespace()
        if namespace:
            env += [
                f"export BAO_NAMESPACE={shlex.quote(namespace)}",
                f"export VAULT_NAMESPACE={shlex.quote(namespace)}",
            ]
        credentials = {
            "token": token,
            "accessor": auth["accessor"],
            "url": url,
            "policies": ", ".join(auth.get("token_policies") or auth.get("policies") or policies),
            "valid_until": expires.isoformat(),
            "env": "\n".join(env),
        }
        if namespace:
            credentials["namespace"] = namespace
        return credentials

    # -- what a scope's token may do ------------------------------------------

    def _parse_scope(self, scope) -> tuple[list[str], bool]:
        if not isinstance(scope, dict):
            raise ConnectorError("Grant scope must be a mapping with policies (and no_default_policy).", permanent=True)
        unknown = sorted(set(scope) - SCOPE_FIELDS)
        if unknown:
            raise ConnectorError(
                f"Grant scope field(s) {', '.join(unknown)} unknown for OpenBao;"
                f" expected {', '.join(sorted(SCOPE_FIELDS))}.",
                permanent=True,
            )
        policies = scope.get("policies")
        if not isinstance(policies, list) or not policies or not all(isinstance(p, str) for p in policies):
            raise ConnectorError("Grant scope 'policies' must be a non-empty list of policy names.", permanent=True)
        bad = [p for p in policies if not _POLICY_RE.fullmatch(p)]
        if bad:
            raise ConnectorError(
                f"Grant scope policy name(s) {', '.join(map(repr, bad))} are not valid (letters, digits, _.@=+-).",
                permanent=True,
            )
        # The server lowercases policy names.
        policies = list(dict.fromkeys(p.lower() for p in policies))
        if "root" in policies:
            raise ConnectorError(
                "Grant scope policy 'root' is refused: a root token can do everything, forever.", permanent=True
            )
        no_default = scope.get("no_default_policy", False)
        if not isinstance(no_default, bool):
            raise ConnectorError("Grant scope 'no_default_policy' must be true or false.", permanent=True)
        return policies, no_default

    def _require_policies(self, policies: list[str]) -> None:
        missing = [p for p in policies if self._call("GET", f"sys/policies/acl/{p}", missing_ok=True) is None]
        if missing:
            raise ConnectorError(
                f"Polic{'ies' if len(missing) > 1 else 'y'} {', '.join(missing)} do{'' if len(missing) > 1 else 'es'}"
                f" not exist on target {self.target.name!r}; fix the access profile.",
                permanent=True,
            )

    def _refuse_escapes(self, accessor: str, policies: list[str], no_default: bool) -> None:
        """Ask the server what the token may do on the paths that outlive a grant; raise naming each one it may."""
        paths = self._escape_paths(policies, no_default)
        answer = self._call("POST", "sys/capabilities-accessor", json={"accessor": accessor, "paths": list(paths)})
        granted = answer.get("data") or answer
        problems = []
        for path, (refused, why) in paths.items():
            capabilities = set(granted.get(path) or [])
            hit = _EVERYTHING if "root" in capabilities else capabilities & refused
            if hit:
                problems.append(f"{', '.join(sorted(hit))} on {path}: it {why}")
        if problems:
            listed = ", ".join(policies) + ("" if no_default else " (with default)")
            raise ConnectorError(
                f"Refusing the scope on target {self.target.name!r}: a token with the policies {listed} has "
                + "; ".join(problems)
                + ". Fix the policies or the profile.",
                permanent=True,
            )

    def _escape_paths(self, policies: list[str], no_default: bool) -> dict[str, tuple[frozenset[str], str]]:
        outlive = "which outlive the grant"
        paths = {
            "auth/token/create-orphan": (frozenset({"sudo"}), f"creates orphan tokens, {outlive}"),
            "auth/token/create": (frozenset({"sudo"}), f"creates tokens without a parent (no_parent), {outlive}"),
            f"auth/token/create/{self.prefix}g0": (
                _WRITE,
                f"creates orphan tokens through other grants' token roles, {outlive}",
            ),
            f"auth/token/roles/{_PROBE}": (_WRITE, "defines token roles, such as one that issues orphan tokens"),
            f"sys/auth/{_PROBE}": (_WRITE | {"sudo"}, "enables auth methods"),
            f"sys/plugins/catalog/auth/{_PROBE}": (_WRITE | {"sudo"}, "registers plugins, programs the server runs"),
            f"sys/audit/{_PROBE}": (_WRITE | {"sudo", "delete"}, "turns audit devices on and off"),
            f"sys/raw/{_PROBE}": (_EVERYTHING, "reads and writes the server's storage directly"),
            "identity/entity": (_WRITE, f"gives identities policies, {outlive}"),
            f"identity/entity/id/{_PROBE}": (_WRITE, f"gives identities policies, {outlive}"),
            "identity/group": (_WRITE, f"gives identities policies through groups, {outlive}"),
            f"identity/group/id/{_PROBE}": (_WRITE, f"gives identities policies through groups, {outlive}"),
        }
        for name in [*policies, *([] if no_default else ["default"]), _PROBE]:
            for base in ("sys/policies/acl/", "sys/policy/"):
                paths[base + name] = (_WRITE, f"writes policies, so that tokens gain rights {outlive}")
        for role in self._other_orphan_roles():
            paths[f"auth/token/create/{role}"] = (_WRITE, f"creates orphan tokens through token role {role}, {outlive}")
        for mount in self._auth_mounts():
            what = f"makes logins under auth/{mount} (users, roles, secret IDs, its configuration), {outlive}"
            for suffix in (
                "config",
                f"users/{_PROBE}",
                f"role/{_PROBE}",
                f"role/{_PROBE}/secret-id",
                f"certs/{_PROBE}",
                f"groups/{_PROBE}",
            ):
                paths[f"auth/{mount}{suffix}"] = (_WRITE, what)
        return paths

    def _other_orphan_roles(self) -> list[str]:
        """Return the token roles not ours that issue orphan tokens."""
        ours = re.compile(re.escape(self.prefix) + r"(g[0-9]+|check_[0-9a-f]{8})")
        found = []
        for role in self._list("auth/token/roles"):
            if ours.fullmatch(role):
                continue  # covered by the "<prefix>g0" path; a hand-made "jit_ci" role is looked at
            data = (self._call("GET", f"auth/token/roles/{quote(role, safe='')}", missing_ok=True) or {}).get(
                "data"
            ) or {}
            if data.get("orphan"):
                found.append(role)
        return found

    def _auth_mounts(self) -> list[str]:
        """Return the paths ("userpass/") of the auth methods other than tokens."""
        answer = self._call("GET", "sys/auth")
        mounts = answer.get("data") or {key: value for key, value in answer.items() if key.endswith("/")}
        return sorted(
            path for path, mount in mounts.items() if isinstance(mount, dict) and mount.get("type") != "token"
        )

    def _admin_lacks(self) -> list[str]:
        """Return what the admin token may not do of what the connector does, as "<capabilities> on <path>"."""
        role = self.prefix + "g0"
        needed = {
            "auth/token/roles": {"list"},
            f"auth/token/roles/{role}": {"create", "read", "update", "delete"},
            f"auth/token/roles/{_PROBE}": {"read"},
            f"auth/token/create/{role}": {"update"},
            "sys/leases/lookup/auth/token/create/": {"list", "sudo"},
            f"sys/leases/lookup/auth/token/create/{role}/": {"list", "sudo"},
            f"sys/leases/revoke-prefix/auth/token/create/{role}": {"update", "sudo"},
            "sys/capabilities-accessor": {"update"},
            f"sys/policies/acl/{_PROBE}": {"read"},
            "sys/auth": {"read"},
        }
        answer = self._call("POST", "sys/capabilities-self", json={"paths": list(needed)})
        granted = answer.get("data") or answer
        missing = []
        for path, wanted in needed.items():
            have = set(granted.get(path) or [])
            lacking = set() if "root" in have else wanted - have
            if lacking:
                missing.append(f"{', '.join(sorted(lacking))} on {path}")
        return missing

    # -- HTTP -------------------------------------------------------------------

    def _list(self, path: str) -> list[str]:
        answer = self._call("GET", path, params={"list": "true"}, missing_ok=True)
        return list(((answer or {}).get("data") or {}).get("keys") or [])

    def _call(self, method: str, path: str, *, json=None, params=None, missing_ok=False, authenticated=True):
        """Send one request; return its JSON (None for a 404 when `missing_ok`); raise ConnectorError otherwise."""
        headers = {}
        if authenticated:
            headers["X-Vault-Token"] = self._admin_token()
        if self._namespace():
            headers["X-Vault-Namespace"] = self._namespace()
        url = f"{self._base_url()}/v1/{path}"
        self.fail_fast()  # a server this instance could not reach is not asked again (`Connector.trip`)
        try:
            # No redirects: a standby answering 307 would have our token sent on.
            response = self._session().request(
                method, url, json=json, params=params, headers=headers, timeout=TIMEOUT, allow_redirects=False
            )
        except requests.RequestException as exc:
            self.close()
            error = ConnectorError(
                f"Cannot reach target {self.target.name!r} ({self._base_url()}): {type(exc).__name__}"
            )
            if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
                self.trip(error)
            raise error from None
        if response.status_code == 404 and missing_ok:
            return None
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {}
        if response.status_code in (200, 204):
            return body
        errors = "; ".join(str(e) for e in (body.get("errors") or []) if e) if isinstance(body, dict) else ""
        what = f"{method} {path}: HTTP {response.status_code}" + (f" ({' '.join(errors.split())})" if errors else "")
        if response.status_code == 403:
            raise ConnectorError(
                f"Target {self.target.name!r} refused {what}: the admin token is invalid, expired, or lacks that"
                " permission (see the README's OpenBao set-up).",
                permanent=True,
            )
        if 300 <= response.status_code < 400:
            raise ConnectorError(
                f"Target {self.target.name!r} redirected {what}; point url at the active node or its load balancer.",
                permanent=True,
            )
        # 429, 5xx (503: sealed, or a standby): retrying may help. 400: our request is wrong for this server.
        raise ConnectorError(
            f"Target {self.target.name!r} refused {what}.", permanent=response.status_code in (400, 405)
        )

    def _session(self) -> requests.Session:
        if self._http is None:
            session = requests.Session()
            # Not the machine's proxy settings or .netrc: the admin token goes nowhere but the target.
            session.trust_env = False
            ca_file = self.target.config.get("ca_file")
            if ca_file is not None and (not isinstance(ca_file, str) or not ca_file):
                raise ConnectorError(f"Target {self.target.name!r}: ca_file must be a file path.", permanent=True)
            session.verify = ca_file or True
            self._http = session
        return self._http

    def _base_url(self) -> str:
        url = self.target.config.get("url")
        try:
            parts = urlsplit(url) if isinstance(url, str) else None
            valid = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:
            valid = False
        if not valid or parts.query or parts.path.strip("/"):
            raise ConnectorError(
                f"Target {self.target.name!r} config 'url' must be the server's address,"
                " e.g. https://bao.internal:8200.",
                permanent=True,
            )
        return url.rstrip("/")

    def _namespace(self) -> str:
        namespace = self.target.config.get("namespace") or ""
        if namespace and (not isinstance(namespace, str) or not _NAMESPACE_RE.fullmatch(namespace)):
            raise ConnectorError(
                f"Target {self.target.name!r}: namespace {namespace!r} is not a namespace path.", permanent=True
            )
        return namespace

    def _admin_token(self) -> str:
        if self._token is None:
            token = self.admin_secret()
            if not re.fullmatch(r"[\x21-\x7e]+", token):
                raise ConnectorError(f"The admin token of target {self.target.name!r} is not a token.", permanent=True)
            self._token = token
            self._hide.append(token)
        return self._token

    @contextlib.contextmanager
    def _errors(self, action: str):
        """Prefix ConnectorErrors with the action, and keep every token out of the message."""
        try:
            yield
        except ConnectorError as exc:
            message = exc.message
            for secret in self._hide:
                message = message.replace(secret, "***")
            if message.startswith("Target "):  # a refused request: say what it was for
                message = f"Cannot {action}: {message}"
            raise ConnectorError(message, permanent=exc.permanent) from None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _seconds(value) -> int:
    """Read a duration as the server writes it: seconds, or "24h"/"90m"/"30s"."""
    if isinstance(value, (int, float)):
        return int(value)
    match = re.fullmatch(r"(\d+)([smh]?)", str(value or "").strip())
    if not match:
        return 0
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
