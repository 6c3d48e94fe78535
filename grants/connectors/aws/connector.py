"""AWS connector: temporary STS credentials for a role, cut off by IAM itself at expiry.

A grant's scope takes one of two forms:

- Shared role, `{"role_arn": ..., "session_policy": {...}?, "max_session_seconds": N?}`:
  the portal assumes the existing role with the session name `<prefix>g<pk>`
  and a session policy that ends in "Deny everything once aws:CurrentTime is
  past expires_at". A session policy only narrows the role's permissions, so
  without one from the scope it is "Allow *" plus that deny.
- Per-grant role, `{"policy_arns": [...]?, "inline_policy": {...}?, "max_session_seconds": N?}`:
  the portal creates the role `<prefix>g<pk>` under the path /jitportal/,
  trusted by the portal's own principal only until expires_at. Its inline
  policy holds the scope's statements, each Allow conditioned on
  `DateLessThan aws:CurrentTime expires_at`, and a "Deny * after expiry"
  statement that also covers the managed policies (which cannot carry our
  condition). The portal then assumes the role for the user.

Why the target enforces expiry: IAM evaluates every policy, and so
`aws:CurrentTime`, on each request, not when the credentials are issued.
STS cannot issue credentials for less than 900 s (nor for longer than the
role's maximum session duration), so a grant ending in 5 minutes gets
15-minute credentials and the explicit deny refuses them from expires_at on.

Revocation. A per-grant role is emptied (managed policies detached, inline
policy deleted) and deleted: with no policy left, its sessions can do
nothing. STS credentials of a shared role cannot be recalled; the portal
puts AWS's "revoke older sessions" deny (`DateLessThan aws:TokenIssueTime`)
into one inline policy on that role, narrowed with `aws:userid` to the
grant's own session name so that other holders of the role keep working.
Each statement also stops applying at expires_at + a margin, after which
the session's own deny takes over, and is then pruned: a role's inline
policies must fit in 10,240 characters.

Target config: `region`, optional `endpoint_url` (tests point it at moto),
optional `prefix` (default "jit-"), optional `account_id` (check() verifies
it), optional `principal_arn` (the principal per-grant roles trust; derived
from the admin credentials when absent). The variable named by
`target.secret_env` holds either `default-chain` (boto3's default credential
chain, e.g. an instance role) or JSON `{"aws_access_key_id", "aws_secret_access_key",
"aws_session_token"?, "role_arn"?}`; with `role_arn` the portal assumes that
role first (keys optional: without them, from the default chain).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import math
import re
import time
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from .. import digest as activity
from ..base import Connector, ConnectorError, GrantLike, Provisioned

DEFAULT_PREFIX = "jit-"
ROLE_PATH = "/jitportal/"
GRANT_POLICY_NAME = "jitportal-grant"
DEFAULT_CHAIN = "default-chain"
POLICY_VERSION = "2012-10-17"

# STS limits: AssumeRole's DurationSeconds is 900 s at least and at most the
# role's MaxSessionDuration, which itself is 1 to 12 hours.
MIN_SESSION_SECONDS = 900
DEFAULT_MAX_SESSION_SECONDS = 3600
MAX_SESSION_SECONDS = 43_200
# A revocation statement keeps applying this long after the grant's expiry,
# so that it overlaps the session's own deny whatever the clocks say.
PRUNE_MARGIN = datetime.timedelta(minutes=5)
# aws:TokenIssueTime is stamped by AWS's clock, the bound by ours: allow for skew.
CLOCK_SKEW = datetime.timedelta(seconds=60)

# IAM is eventually consistent: a role created a moment ago may not be
# assumable yet (AccessDenied) for some seconds.
ASSUME_NEW_ROLE_WAIT_S = 30.0

CLIENT_CONFIG = Config(
    connect_timeout=5,
    read_timeout=30,
    retries={"max_attempts": 3, "mode": "standard"},
    user_agent_extra="jitportal",
)

# Error codes retrying cannot fix: the configuration, the profile or the
# portal's IAM permissions must change first.
PERMANENT_CODES = {
    "AccessDenied",
    "AccessDeniedException",
    "ExpiredToken",
    "InvalidClientTokenId",
    "InvalidInput",
    "LimitExceeded",
    "MalformedPolicyDocument",
    "NoSuchEntity",
    "PackedPolicyTooLarge",
    "RegionDisabledException",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "ValidationError",
}

_PREFIX_RE = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,40}$")
_ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/(?:[\x21-\x7e]*/)?([\w+=,.@-]{1,64})$")
_POLICY_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::(?:\d{12}|aws):policy/[\x21-\x7e]+$")
_ASSUMED_ROLE_RE = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([\w+=,.@-]+)/[^/]+$")
_SHARED_KEYS = {"role_arn", "session_policy", "max_session_seconds"}
_OWN_ROLE_KEYS = {"policy_arns", "inline_policy", "max_session_seconds"}
_ADMIN_KEYS = {"aws_access_key_id", "aws_secret_access_key", "aws_session_token", "role_arn"}


def iso(moment: datetime.datetime) -> str:
    """Return `moment` in UTC as IAM writes dates, to the second (2025-01-31T12:00:00Z)."""
    if moment.tzinfo is None:
        raise ValueError("datetimes sent to AWS must be timezone-aware")
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> datetime.datetime | None:
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def deny_after(expires_at: datetime.datetime) -> dict[str, Any]:
    """Return the statement that refuses every request from `expires_at` on."""
    return {
        "Sid": "JitDenyAfterExpiry",
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {"DateGreaterThan": {"aws:CurrentTime": iso(expires_at)}},
    }


def _statements(policy: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(policy, dict):
        raise ConnectorError(f"Grant scope {what!r} must be a JSON policy document.", permanent=True)
    statements = policy.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements or not all(isinstance(s, dict) for s in statements):
        raise ConnectorError(f"Grant scope {what!r} must have a non-empty Statement list.", permanent=True)
    return copy.deepcopy(statements)


def _document(statements: list[dict[str, Any]]) -> str:
    # IAM counts characters against its size limits: send compact JSON.
    return json.dumps({"Version": POLICY_VERSION, "Statement": statements}, separators=(",", ":"))


class AWSConnector(Connector):
    """Issue temporary STS credentials for a shared role or a per-grant IAM role."""

    default_prefix = DEFAULT_PREFIX
    prefix_pattern = _PREFIX_RE
    prefix_rule = "1-40 letters, digits or +=,.@_-"

    def __init__(self, target):
        super().__init__(target)
        self._session: boto3.session.Session | None = None
        self._admin_spec: dict[str, str] | None = None
        self._clients: dict[str, Any] = {}
        self._principal: str | None = None
        self._secrets: list[str] = []

    # -- naming -------------------------------------------------------------

    def session_name(self, grant: GrantLike) -> str:
        """Return the role (and role session) name of a grant."""
        return self.account_name(grant)

    @property
    def revocation_policy_name(self) -> str:
        return f"{self.prefix}revoked-sessions"

    # -- interface ----------------------------------------------------------

    def provision(self, grant: GrantLike) -> Provisioned:
        """Return fresh STS credentials for the grant, creating or updating its role first if it has one."""
        scope = self._scope(grant)
        expires_at = grant.expires_at
        if expires_at is None or expires_at.tzinfo is None:
            raise ValueError("grant.expires_at must be timezone-aware")
        name = self.session_name(grant)
        if "role_arn" in scope:
            with self._errors("assume " + scope["role_arn"]):
                response = self._assume(
                    scope["role_arn"],
                    name,
                    self._duration(expires_at, scope),
                    policy=self._session_policy(scope, expires_at),
                )
            external_ref = response["AssumedRoleUser"]["Arn"]
        else:
            with self._errors("provision role " + name):
                role_arn = self._ensure_role(grant, scope, name)
                response = self._assume(role_arn, name, self._duration(expires_at, scope), new_role=True)
            external_ref = name
        return Provisioned(
            external_ref=external_ref,
            credentials=self._credentials(name, response),
            expires_at=expires_at,
        )

    def revoke(self, grant: GrantLike) -> None:
        """End the grant's access: delete its own role, or deny its sessions on the shared role.

        Succeeds if there is nothing left to revoke.
        """
        scope = self._scope(grant)
        name = self.session_name(grant)
        if "role_arn" in scope:
            with self._errors("revoke sessions " + name):
                self._deny_sessions(grant, scope["role_arn"], name)
        else:
            with self._errors("delete role " + name):
                self._delete_role(name)

    def revoke_many(self, grants: list[GrantLike]) -> dict[int, str]:
        """Revoke each grant (`revoke`); say in each revoked grant's activity where its use is, and why not here.

        AWS keeps what the credentials did in CloudTrail, under the role
        session name; its LookupEvents shows management events about 15
        minutes late, so at revocation the record is not complete: the portal
        claims nothing and names the session to look up.
        """
        errors = super().revoke_many(grants)
        for grant in grants:
            if grant.pk not in errors:
                self.activity[grant.pk] = activity.unavailable(
                    "cloudtrail",
                    f"not read; CloudTrail has the calls of role session {self.session_name(grant)}"
                    " (about 15 minutes late)",
                )
        return errors

    def is_present(self, grant: GrantLike) -> bool:
        """Read IAM again: could the grant's credentials still do anything?"""
        scope = self._scope(grant)
        name = self.session_name(grant)
        if "role_arn" not in scope:
            with self._errors("inspect role " + name):
                try:
                    self._client("iam").get_role(RoleName=name)
                except ClientError as exc:
                    if _code(exc) == "NoSuchEntity":
                        return False
                    raise
            return True
        if grant.expires_at is not None and grant.expires_at <= _now():
            return False  # the session policy's own deny refuses every request now
        role = self._role_name_of(scope["role_arn"])
        with self._errors("inspect role " + role):
            try:
                self._client("iam").get_role(RoleName=role)
            except ClientError as exc:
                if _code(exc) == "NoSuchEntity":
                    return False  # no role, no sessions of it
                raise
            statements = self._revocation_statements(role)
        return not any(s.get("Sid") == self._revocation_sid(grant) for s in statements)

    def list_managed(self) -> set[str]:
        """Return the names of the per-grant roles on the target (path /jitportal/, prefix + "g" + digits).

        Sessions of shared roles cannot be listed: STS keeps no inventory of them.
        """
        pattern = re.compile(re.escape(self.prefix + "g") + r"[0-9]+")
        with self._errors("list roles"):
            names = set()
            for page in self._client("iam").get_paginator("list_roles").paginate(PathPrefix=ROLE_PATH):
                for role in page["Roles"]:
                    # The reconciler deletes what we return: only our path and exact pattern.
                    if role.get("Path") == ROLE_PATH and pattern.fullmatch(role["RoleName"]):
                        names.add(role["RoleName"])
        return names

    def check(self) -> list[str]:
        """Call sts:GetCallerIdentity with the admin credentials; verify the account if configured."""
        with self._errors("check"):
            identity = self._client("sts").get_caller_identity()
        expected = self.target.config.get("account_id")
        if expected and str(expected) != identity["Account"]:
            raise ConnectorError(
                f"Target {self.target.name!r} expects AWS account {expected}, but its credentials belong to "
                f"{identity['Account']}.",
                permanent=True,
            )
        return []

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    # -- scope --------------------------------------------------------------

    def _scope(self, grant: GrantLike) -> dict[str, Any]:
        scope = grant.scope or {}
        if not isinstance(scope, dict):
            raise ConnectorError("The AWS grant scope must be a JSON object.", permanent=True)
        if "role_arn" in scope:
            unknown = set(scope) - _SHARED_KEYS
            if unknown:
                raise ConnectorError(
                    f"Grant scope with role_arn does not take {', '.join(sorted(unknown))}.", permanent=True
                )
            if not isinstance(scope["role_arn"], str) or not _ROLE_ARN_RE.match(scope["role_arn"]):
                raise ConnectorError(
                    f"Grant scope role_arn {scope['role_arn']!r} is not an IAM role ARN.", permanent=True
                )
            if "session_policy" in scope:
                _statements(scope["session_policy"], "session_policy")
        else:
            unknown = set(scope) - _OWN_ROLE_KEYS
            if unknown:
                raise ConnectorError(f"Unknown AWS grant scope key(s) {', '.join(sorted(unknown))}.", permanent=True)
            arns = scope.get("policy_arns", [])
            if not isinstance(arns, list) or not all(isinstance(a, str) and _POLICY_ARN_RE.match(a) for a in arns):
                raise ConnectorError("Grant scope policy_arns must be a list of IAM policy ARNs.", permanent=True)
            if "inline_policy" in scope:
                _statements(scope["inline_policy"], "inline_policy")
            elif not arns:
                raise ConnectorError(
                    "The AWS grant scope needs role_arn, policy_arns or inline_policy.", permanent=True
                )
        limit = scope.get("max_session_seconds", DEFAULT_MAX_SESSION_SECONDS)
        if (
            not isinstance(limit, int)
            or isinstance(limit, bool)
            or not MIN_SESSION_SECONDS <= limit <= MAX_SESSION_SECONDS
        ):
            raise ConnectorError(
                f"Grant scope max_session_seconds must be an integer from {MIN_SESSION_SECONDS} to "
                f"{MAX_SESSION_SECONDS}.",
                permanent=True,
            )
        return scope

    def _duration(self, expires_at: datetime.datetime, scope: dict[str, Any]) -> int:
        """Return DurationSeconds: the time left, at least STS's 900 s, at most the role's maximum."""
        left = math.ceil((expires_at - _now()).total_seconds())
        if left <= 0:
            raise ConnectorError("The grant has already expired; no credentials are issued.", permanent=True)
        limit = scope.get("max_session_seconds", DEFAULT_MAX_SESSION_SECONDS)
        return min(max(MIN_SESSION_SECONDS, left), limit)

    def _session_policy(self, scope: dict[str, Any], expires_at: datetime.datetime) -> str:
        if "session_policy" in scope:
            statements = _statements(scope["session_policy"], "session_policy")
        else:
            # The session's permissions are the role's AND the session policy's.
            statements = [{"Sid": "JitRolePermissions", "Effect": "Allow", "Action": "*", "Resource": "*"}]
        return _document([*statements, deny_after(expires_at)])

    def _grant_policy(self, scope: dict[str, Any], expires_at: datetime.datetime) -> str:
        statements = _statements(scope["inline_policy"], "inline_policy") if "inline_policy" in scope else []
        until = iso(expires_at)
        for statement in statements:
            if statement.get("Effect") != "Allow":
                continue
            condition = statement.setdefault("Condition", {})
            before = condition.setdefault("DateLessThan", {}) if isinstance(condition, dict) else None
            if not isinstance(before, dict) or any(key.lower() == "aws:currenttime" for key in before):
                # Ours would have to replace theirs: refuse rather than guess which is meant.
                raise ConnectorError(
                    "Grant scope inline_policy already conditions on DateLessThan aws:CurrentTime; the portal "
                    "sets that.",
                    permanent=True,
                )
            before["aws:CurrentTime"] = until
        return _document([*statements, deny_after(expires_at)])

    # -- per-grant role -----------------------------------------------------

    def _ensure_role(self, grant: GrantLike, scope: dict[str, Any], name: str) -> str:
        """Create or update the grant's role so that it holds exactly the scope's policies; return its ARN."""
        iam = self._client("iam")
        expires_at = grant.expires_at
        # Built first: a scope IAM would refuse must not leave an empty role behind.
        grant_policy = self._grant_policy(scope, expires_at)
        trust = _document(
            [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": self._portal_principal()},
                    "Action": "sts:AssumeRole",
                    "Condition": {"DateLessThan": {"aws:CurrentTime": iso(expires_at)}},
                }
            ]
        )
        max_session = max(DEFAULT_MAX_SESSION_SECONDS, scope.get("max_session_seconds", DEFAULT_MAX_SESSION_SECONDS))
        tags = [
            {"Key": "jitportal:grant", "Value": str(int(grant.pk))},
            {"Key": "jitportal:expires", "Value": iso(expires_at)},
        ]
        try:
            role = iam.create_role(
                Path=ROLE_PATH,
                RoleName=name,
                AssumeRolePolicyDocument=trust,
                Description=f"jitportal grant {int(grant.pk)}, until {iso(expires_at)}",
                MaxSessionDuration=max_session,
                Tags=tags,
            )["Role"]
        except ClientError as exc:
            if _code(exc) != "EntityAlreadyExists":
                raise
            # Provisioning again (or a second worker): bring the role to the wanted state.
            role = iam.get_role(RoleName=name)["Role"]
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust)
            iam.update_role(RoleName=name, MaxSessionDuration=max_session)
            iam.tag_role(RoleName=name, Tags=tags)

        iam.put_role_policy(RoleName=name, PolicyName=GRANT_POLICY_NAME, PolicyDocument=grant_policy)
        for policy_name in self._inline_policy_names(name):
            if policy_name != GRANT_POLICY_NAME:
                iam.delete_role_policy(RoleName=name, PolicyName=policy_name)
        wanted = scope.get("policy_arns", [])
        attached = self._attached_policy_arns(name)
        for arn in wanted:
            if arn not in attached:
                iam.attach_role_policy(RoleName=name, PolicyArn=arn)
        for arn in attached:
            if arn not in wanted:
                iam.detach_role_policy(RoleName=name, PolicyArn=arn)
        return role["Arn"]

    def _delete_role(self, name: str) -> None:
        iam = self._client("iam")
        try:
            # Managed policies first: the inline policy holds the deny-after-expiry
            # statement, which must outlive every allow.
            for arn in self._attached_policy_arns(name):
                _ignore_missing(iam.detach_role_policy, RoleName=name, PolicyArn=arn)
            for policy_name in self._inline_policy_names(name):
                _ignore_missing(iam.delete_role_policy, RoleName=name, PolicyName=policy_name)
            iam.delete_role(RoleName=name)
        except ClientError as exc:
            if _code(exc) != "NoSuchEntity":
                raise

    def _attached_policy_arns(self, name: str) -> list[str]:
        pages = self._client("iam").get_paginator("list_attached_role_policies").paginate(RoleName=name)
        return [p["PolicyArn"] for page in pages for p in page["AttachedPolicies"]]

    def _inline_policy_names(self, name: str) -> list[str]:
        pages = self._client("iam").get_paginator("list_role_policies").paginate(RoleName=name)
        return [n for page in pages for n in page["PolicyNames"]]

    def _portal_principal(self) -> str:
        """Return the ARN per-grant roles trust: the portal's own IAM user or role."""
        if self._principal is None:
            configured = self.target.config.get("principal_arn") or self._admin().get("role_arn")
            if configured:
                self._principal = configured
            else:
                arn = self._client("sts").get_caller_identity()["Arn"]
                match = _ASSUMED_ROLE_RE.match(arn)
                # A trust policy names the role, not one session of it. The
                # role's path is not in a session ARN: set principal_arn if it has one.
                self._principal = f"arn:{match[1]}:iam::{match[2]}:role/{match[3]}" if match else arn
        return self._principal

    # -- shared role: revoking sessions -------------------------------------

    def _revocation_sid(self, grant: GrantLike) -> str:
        return f"RevokeG{int(grant.pk)}"

    def _revocation_statements(self, role: str) -> list[dict[str, Any]]:
        try:
            document = self._client("iam").get_role_policy(RoleName=role, PolicyName=self.revocation_policy_name)[
                "PolicyDocument"
            ]
        except ClientError as exc:
            if _code(exc) == "NoSuchEntity":
                return []
            raise
        if isinstance(document, str):
            document = json.loads(document)
        statements = document.get("Statement", [])
        return [statements] if isinstance(statements, dict) else list(statements)

    def _deny_sessions(self, grant: GrantLike, role_arn: str, name: str) -> None:
        """Deny the grant's sessions issued up to now on the shared role, leaving other holders alone."""
        iam = self._client("iam")
        role = self._role_name_of(role_arn)
        now = _now()
        # The session policy refuses everything from expires_at on; until then
        # (plus a margin) this statement must hold. A grant that never got its
        # expiry (failed before provisioning) gets STS's longest possible session.
        until = (grant.expires_at or now + datetime.timedelta(seconds=MAX_SESSION_SECONDS)) + PRUNE_MARGIN
        issued_before = now.replace(microsecond=0) + datetime.timedelta(seconds=1) + CLOCK_SKEW
        sid = self._revocation_sid(grant)
        mine = {
            "Sid": sid,
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {
                # aws:userid of a role session is "<role id>:<session name>".
                "StringLike": {"aws:userid": f"*:{name}"},
                "DateLessThan": {"aws:TokenIssueTime": iso(issued_before), "aws:CurrentTime": iso(until)},
            },
        }
        for _attempt in range(3):
            current = self._revocation_statements(role)
            # Replace ours in place (a retry moves TokenIssueTime on), drop the stale, keep the rest.
            wanted = [mine if s.get("Sid") == sid else s for s in current if not self._stale(s, now)]
            if until <= now:
                wanted = [s for s in wanted if s.get("Sid") != sid]
            elif mine not in wanted:
                wanted.append(mine)
            if wanted != current:
                try:
                    if wanted:
                        iam.put_role_policy(
                            RoleName=role, PolicyName=self.revocation_policy_name, PolicyDocument=_document(wanted)
                        )
                    else:
                        iam.delete_role_policy(RoleName=role, PolicyName=self.revocation_policy_name)
                except ClientError as exc:
                    if _code(exc) == "NoSuchEntity":
                        return  # the role is gone, and its sessions with it
                    raise
            # Another worker revoking on the same role may have written over us
            # (read-modify-write); read back. is_present() checks once more.
            if until <= now or any(s.get("Sid") == sid for s in self._revocation_statements(role)):
                return
        raise ConnectorError(f"The revocation of {name} on role {role} was overwritten concurrently; will retry.")

    def _stale(self, statement: dict[str, Any], now: datetime.datetime) -> bool:
        """Is this one of our revocation statements whose session has expired anyway?"""
        if not re.fullmatch(r"RevokeG[0-9]+", str(statement.get("Sid", ""))):
            return False
        until = _parse_iso(str(statement.get("Condition", {}).get("DateLessThan", {}).get("aws:CurrentTime", "")))
        return until is not None and until <= now

    def _role_name_of(self, role_arn: str) -> str:
        return _ROLE_ARN_RE.match(role_arn)[1]

    # -- STS ----------------------------------------------------------------

    def _assume(
        self, role_arn: str, name: str, duration: int, *, policy: str | None = None, new_role: bool = False
    ) -> dict:
        params = {"RoleArn": role_arn, "RoleSessionName": name, "DurationSeconds": duration}
        if policy is not None:
            params["Policy"] = policy
        sts = self._client("sts")
        deadline = time.monotonic() + ASSUME_NEW_ROLE_WAIT_S
        delay = 1.0
        while True:
            try:
                return sts.assume_role(**params)
            except ClientError as exc:
                if not (new_role and _code(exc) == "AccessDenied"):
                    raise
                if time.monotonic() + delay > deadline:
                    # Most likely IAM has not propagated the new role yet: not permanent.
                    raise ConnectorError(
                        f"Cannot assume the new role {name} on target {self.target.name!r} yet: "
                        f"{self._scrub(_message(exc))}"
                    ) from None
            time.sleep(delay)
            delay = min(delay * 2, 8.0)

    def _credentials(self, name: str, response: dict) -> dict[str, str]:
        creds = response["Credentials"]
        key, secret, token = creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]
        expiration = creds["Expiration"]
        expiration = iso(expiration) if isinstance(expiration, datetime.datetime) else str(expiration)
        region = str(self.target.config.get("region", ""))
        env = [
            f"export AWS_ACCESS_KEY_ID={key}",
            f"export AWS_SECRET_ACCESS_KEY={secret}",
            f"export AWS_SESSION_TOKEN={token}",
        ]
        if region:
            env.append(f"export AWS_REGION={region}")
        profile = [
            f"[{name}]",
            f"aws_access_key_id = {key}",
            f"aws_secret_access_key = {secret}",
            f"aws_session_token = {token}",
        ]
        return {
            "access_key_id": key,
            "secret_access_key": secret,
            "session_token": token,
            "expiration": expiration,
            "role_session_arn": response["AssumedRoleUser"]["Arn"],
            "region": region,
            "env": "\n".join(env),
            "credentials_file": "\n".join(profile) + "\n",
        }

    # -- admin session ------------------------------------------------------

    def _admin(self) -> dict[str, str]:
        if self._admin_spec is None:
            raw = self.admin_secret().strip()
            if raw == DEFAULT_CHAIN:
                spec = {}
            else:
                try:
                    spec = json.loads(raw)
                except ValueError:
                    # The decoder's message can quote the text, which holds the key.
                    raise ConnectorError(
                        f"The admin secret of target {self.target.name!r} is neither {DEFAULT_CHAIN!r} nor valid JSON.",
                        permanent=True,
                    ) from None
                if (
                    not isinstance(spec, dict)
                    or set(spec) - _ADMIN_KEYS
                    or not all(isinstance(v, str) for v in spec.values())
                ):
                    raise ConnectorError(
                        f"The admin secret of target {self.target.name!r} must be a JSON object with "
                        f"{', '.join(sorted(_ADMIN_KEYS))}.",
                        permanent=True,
                    )
                if ("aws_access_key_id" in spec) != ("aws_secret_access_key" in spec):
                    raise ConnectorError(
                        f"The admin secret of target {self.target.name!r} needs both aws_access_key_id and "
                        "aws_secret_access_key.",
                        permanent=True,
                    )
            self._secrets = [v for k, v in spec.items() if k in ("aws_secret_access_key", "aws_session_token")]
            self._admin_spec = spec
        return self._admin_spec

    def _boto(self) -> boto3.session.Session:
        if self._session is None:
            region = self.target.config.get("region")
            if not region:
                raise ConnectorError(f"Target {self.target.name!r} config lacks region.", permanent=True)
            spec = self._admin()
            session = boto3.session.Session(
                aws_access_key_id=spec.get("aws_access_key_id"),
                aws_secret_access_key=spec.get("aws_secret_access_key"),
                aws_session_token=spec.get("aws_session_token"),
                region_name=region,
            )
            if spec.get("role_arn"):
                # Connectors live for one task or batch: one assumption is enough.
                sts = session.client("sts", endpoint_url=self.target.config.get("endpoint_url"), config=CLIENT_CONFIG)
                try:
                    creds = sts.assume_role(RoleArn=spec["role_arn"], RoleSessionName="jitportal")["Credentials"]
                finally:
                    sts.close()
                self._secrets += [creds["SecretAccessKey"], creds["SessionToken"]]
                session = boto3.session.Session(
                    aws_access_key_id=creds["AccessKeyId"],
                    aws_secret_access_key=creds["SecretAccessKey"],
                    aws_session_token=creds["SessionToken"],
                    region_name=region,
                )
            self._session = session
        return self._session

    @property
    def session(self) -> boto3.session.Session:
        """The boto3 session with the portal's admin credentials (built on first use)."""
        with self._errors("sign in"):
            return self._boto()

    def _client(self, service: str):
        if service not in self._clients:
            self._clients[service] = self._boto().client(
                service, endpoint_url=self.target.config.get("endpoint_url") or None, config=CLIENT_CONFIG
            )
        return self._clients[service]

    # -- errors -------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, action: str):
        """Turn botocore errors into ConnectorError, without admin secrets in the message."""
        where = f"target {self.target.name!r}"
        self.fail_fast()  # an endpoint this instance could not reach is not asked again (`Connector.trip`)
        try:
            yield
        except ConnectorError:
            raise
        except ClientError as exc:
            raise ConnectorError(
                f"Cannot {action} on {where}: {self._scrub(_message(exc))}", permanent=_code(exc) in PERMANENT_CODES
            ) from None
        except (NoCredentialsError, PartialCredentialsError):
            raise ConnectorError(
                f"Cannot {action} on {where}: no usable AWS credentials were found.", permanent=True
            ) from None
        except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError) as exc:
            raise self.trip(ConnectorError(f"Cannot {action} on {where}: {self._scrub(str(exc))}")) from None
        except BotoCoreError as exc:
            raise ConnectorError(f"Cannot {action} on {where}: {self._scrub(str(exc))}") from None

    def _scrub(self, message: str) -> str:
        for secret in self._secrets:
            if secret:
                message = message.replace(secret, "***")
        return " ".join(message.split())


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _message(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    operation = getattr(exc, "operation_name", "")
    return f"{operation}: {error.get('Code', '')}: {error.get('Message', '')}".strip(": ")


def _ignore_missing(call, **params) -> None:
    try:
        call(**params)
    except ClientError as exc:
        if _code(exc) != "NoSuchEntity":
            raise
