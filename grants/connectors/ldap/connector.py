"""LDAP connector: temporary membership of directory groups, recorded in a ledger on the directory itself.

A grant adds the person's directory entry to the profile's groups for its
duration: its DN as a `member` (groupOfNames) or `uniqueMember`
(groupOfUniqueNames) value, or its uid as a `memberUid` (posixGroup) value.
Revocation removes it and reads each group again.

Which entry. The person's entry is found by the target's `user_filter`
with the attributes the portal holds about them (`{email}`, `{username}`,
`{subject}` (the IdP's `sub`), `{employee_id}`), each escaped for an LDAP
filter (RFC 4515); nothing the requester typed reaches the directory.
Exactly one entry must match.

The ledger. LDAP keeps no record of who added a group member, and the
portal must never remove a membership it did not add. So each grant has one
entry under the target's `ledger_dn`, `cn=<prefix>g<grant id>`
(objectClass applicationProcess, core schema: nothing to load into the
directory), whose `description` values say what the grant holds:

    target: <target name>
    member: <the membership value>
    person: <the person's DN>
    until: <expiry, ISO 8601>
    added: <group DN>      the portal put the value there (or shares it with another grant)
    kept: <group DN>       the value was there already, outside the portal: never removed

The entry is written before a group is changed, and deleted only after a
fresh read shows each of its memberships gone, held by another grant, or
kept; so `list_managed()` (the ledger entries of this target) knows every
membership the portal added, and `is_present()` is true until revocation
has been confirmed. Two grants holding the same membership (touching
grants, two profiles with one group) each record it; revoking one leaves it
while another ledger entry claims it.

Expiry. A group membership has no expiry in LDAP (OpenLDAP's dynlist and
ppolicy do not provide one), so the directory does not end the access by
itself: the portal revokes at expiry and the reconciler proves it. An
application that caches group membership (a session, an SSSD cache) keeps
it until its cache expires.

A groupOfNames (and groupOfUniqueNames) must keep one member: when the
person is the last one, revocation puts `cn=<prefix>nobody,<ledger_dn>` in
their place, a DN nobody can bind as.

Target config: `url` (ldap://host[:port] or ldaps://host[:port]),
`start_tls` (true to upgrade ldap://), `ca_file` (CA bundle for the server's
certificate; default: the system's), `bind_dn`, `user_base`, `user_filter`,
`member_attribute` (member | uniqueMember | memberUid; default member),
`uid_attribute` (with memberUid; default uid), `ledger_dn`, optional
`prefix` (default "jit_"), `timeout` (seconds, default 10). The variable
named by `target.secret_env` (or NAME_FILE) holds the bind password.
Profile scope: `groups`, a list of group DNs.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import re
import ssl
from urllib.parse import urlsplit

import ldap3
from ldap3.core import exceptions as lx
from ldap3.operation.search import parse_filter
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn

from ..base import Connector, ConnectorError, GrantLike, Provisioned

MEMBER_ATTRIBUTES = {"member": "groupOfNames", "uniqueMember": "groupOfUniqueNames", "memberUid": "posixGroup"}
# Object classes known to hold each attribute, for a warning when a scope group has none of them.
GROUP_CLASSES = {
    "member": {"groupofnames", "group", "groupofentries", "groupofmembers"},
    "uniqueMember": {"groupofuniquenames"},
    "memberUid": {"posixgroup"},
}
# The portal's own attributes of a person that a user filter may use.
PLACEHOLDERS = {"email": "email", "username": "username", "subject": "idp_subject", "employee_id": "employee_id"}
CONFIG_KEYS = {
    "url", "start_tls", "ca_file", "bind_dn", "user_base", "user_filter", "member_attribute", "uid_attribute",
    "ledger_dn", "prefix", "timeout",
}  # fmt: skip
SCOPE_KEYS = {"groups"}
DEFAULT_TIMEOUT_S = 10
LEDGER_CLASS = "applicationProcess"
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
_ATTRIBUTE_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]*")


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dn_error(value, what: str) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return f"{what} must be a DN such as cn=ops,ou=groups,dc=example,dc=com"
    try:
        parse_dn(value, strip=True)
    except lx.LDAPInvalidDnError:
        return f"{what} {value!r} is not a valid DN"
    return None


def normal_dn(dn: str) -> str:
    """Return `dn` with lowercase attribute types and no spaces around separators, for comparing DNs.

    Values keep their case: the ledger compares them with caseIgnoreMatch, the groups with their own rules.
    """
    return "".join(f"{attr.strip().lower()}={value.strip()}{sep}" for attr, value, sep in parse_dn(dn, strip=True))


def _is_within(dn: str, base: str) -> bool:
    dn_parts, base_parts = parse_dn(normal_dn(dn)), parse_dn(normal_dn(base))
    tail = dn_parts[len(dn_parts) - len(base_parts) :] if len(dn_parts) >= len(base_parts) else []
    return [(a, v.lower()) for a, v, _ in tail] == [(a, v.lower()) for a, v, _ in base_parts]


class LDAPConnector(Connector):
    """Add a directory entry to groups for a grant's duration, with a ledger of what the portal added."""

    extends_in_place = True  # a membership has no expiry on the target to move

    def __init__(self, target):
        super().__init__(target)
        self._conn: ldap3.Connection | None = None

    # -- the catalog's offline checks ---------------------------------------------

    @classmethod
    def config_errors(cls, config: dict) -> list[str]:
        """Return what is wrong with a target's config, without reading the directory."""
        errors = [
            f"unknown key {key!r}; expected one of {', '.join(sorted(CONFIG_KEYS))}"
            for key in config
            if key not in CONFIG_KEYS
        ]
        url = config.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("ldap", "ldaps") or not parts.hostname or parts.path not in ("", "/"):
            errors.append(f"url must be ldap://host[:port] or ldaps://host[:port] (got {url!r})")
        else:
            try:
                parts.port  # noqa: B018 (urlsplit checks the port only when asked)
            except ValueError:
                errors.append(f"url {url!r} has an invalid port")
            if config.get("start_tls") and parts.scheme == "ldaps":
                errors.append("start_tls is for ldap:// URLs; ldaps:// is TLS from the start")
        if not isinstance(config.get("start_tls", False), bool):
            errors.append("start_tls must be true or false")
        if "ca_file" in config and (not isinstance(config["ca_file"], str) or not config["ca_file"]):
            errors.append("ca_file must be the path of a PEM file with the CA certificate(s)")
        for key in ("bind_dn", "user_base", "ledger_dn"):
            if key not in config:
                errors.append(f"{key} is required")
            elif message := _dn_error(config[key], key):
                errors.append(message)
        errors += _filter_errors(config.get("user_filter"))
        style = config.get("member_attribute", "member")
        if style not in MEMBER_ATTRIBUTES:
            errors.append(f"member_attribute must be one of {', '.join(MEMBER_ATTRIBUTES)} (got {style!r})")
        uid = config.get("uid_attribute", "uid")
        if not isinstance(uid, str) or not _ATTRIBUTE_RE.fullmatch(uid):
            errors.append(f"uid_attribute must be an attribute name such as uid (got {uid!r})")
        timeout = config.get("timeout", DEFAULT_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 300:
            errors.append(f"timeout must be a number of seconds from 1 to 300 (got {timeout!r})")
        return errors

    @classmethod
    def scope_errors(cls, scope: dict) -> list[str]:
        """Return what is wrong with a profile's scope, without reading the directory."""
        errors = [f"unknown key {key!r}; an LDAP scope takes groups" for key in scope if key not in SCOPE_KEYS]
        groups = scope.get("groups")
        if not isinstance(groups, list) or not groups:
            return errors + ["groups must be a non-empty list of group DNs"]
        errors += [message for group in groups if (message := _dn_error(group, "group"))]
        try:
            normal = [normal_dn(g).lower() for g in groups]
        except (lx.LDAPInvalidDnError, AttributeError, TypeError):
            return errors
        if len(set(normal)) != len(normal):
            errors.append("groups names the same group twice")
        return errors

    # -- configuration ------------------------------------------------------------

    def _config(self) -> dict:
        config = self.target.config or {}
        errors = self.config_errors(config)
        if errors:
            raise ConnectorError(f"Target {self.target.name!r} config: {'; '.join(errors)}.", permanent=True)
        return config

    @property
    def member_attribute(self) -> str:
        return self._config().get("member_attribute", "member")

    @property
    def ledger_dn(self) -> str:
        return normal_dn(self._config()["ledger_dn"])

    def entry_dn(self, grant: GrantLike) -> str:
        """Return the DN of a grant's ledger entry: built from the prefix and the grant id only."""
        return f"cn={escape_rdn(self.account_name(grant))},{self.ledger_dn}"

    @property
    def placeholder_dn(self) -> str:
        return f"cn={escape_rdn(self.prefix + 'nobody')},{self.ledger_dn}"

    def _groups(self, scope) -> list[str]:
        if not isinstance(scope, dict):
            raise ConnectorError("The LDAP grant scope must be a mapping with groups.", permanent=True)
        errors = self.scope_errors(scope)
        if errors:
            raise ConnectorError(f"The access profile's LDAP scope is invalid: {'; '.join(errors)}.", permanent=True)
        groups = [normal_dn(g) for g in scope["groups"]]
        for group in groups:
            if _is_within(group, self.ledger_dn):
                raise ConnectorError(
                    f"Group {group} is inside the portal's ledger ({self.ledger_dn}); name a real group.",
                    permanent=True,
                )
        return groups

    # -- connection ---------------------------------------------------------------

    def _connection(self) -> ldap3.Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        config = self._config()
        parts = urlsplit(config["url"])
        use_ssl = parts.scheme == "ldaps"
        tls = None
        if use_ssl or config.get("start_tls"):
            # ldap3 does not verify certificates unless told to.
            tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=config.get("ca_file"))
        timeout = config.get("timeout", DEFAULT_TIMEOUT_S)
        server = ldap3.Server(
            parts.hostname, port=parts.port or (636 if use_ssl else 389), use_ssl=use_ssl, tls=tls,
            get_info=ldap3.NONE, connect_timeout=timeout,
        )  # fmt: skip
        password = self.admin_secret()
        conn = ldap3.Connection(
            server, user=config["bind_dn"], password=password, raise_exceptions=True, receive_timeout=timeout,
            auto_referrals=False, read_only=False,
        )  # fmt: skip

        def connect():
            # Opening, TLS and the bind are one step for the breaker: a frozen
            # server accepts the TCP connection (the kernel does) and hangs at the bind.
            conn.open()
            if config.get("start_tls"):
                conn.start_tls()
            try:
                conn.bind()
            except lx.LDAPInvalidCredentialsResult:
                raise ConnectorError(
                    f"The directory of target {self.target.name!r} refused the bind DN {config['bind_dn']} "
                    "with the password "
                    f"from {self.target.secret_env}: invalid credentials.",
                    permanent=True,
                ) from None

        with self._errors("connect"):
            self.connect_once(connect)
        self._conn = conn
        return conn

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(lx.LDAPException, OSError):
                self._conn.unbind()
            self._conn = None

    # -- interface ----------------------------------------------------------------

    def provision(self, grant: GrantLike) -> Provisioned:
        """Add the person's entry to the scope's groups, ledger first; verify by reading each group again."""
        expires_at = grant.expires_at
        if expires_at is None or expires_at.tzinfo is None:
            raise ValueError("grant.expires_at must be timezone-aware")
        if expires_at <= datetime.datetime.now(datetime.UTC):
            raise ConnectorError(f"Grant {grant.pk} has already expired; no membership added.", permanent=True)
        groups = self._groups(grant.scope)
        person, value = self._find_person(getattr(grant, "user", None))
        attr = self.member_attribute
        with self._errors(f"provision grant {int(grant.pk)}"):
            for group in groups:
                self._has(group, attr, value)  # a missing group is refused before the ledger is written
            record = self._ensure_record(grant, person, value, expires_at)
            if not self._same_member(record["member"], value):
                raise ConnectorError(
                    f"Grant {grant.pk} was provisioned for {record['member']}, but its holder's entry is now {value}; "
                    "the grant is ended and the earlier membership removed.",
                    permanent=True,
                )
            for group in groups:
                self._hold(grant, record, group, value)
            for group in groups:
                if not self._has(group, attr, value):
                    raise ConnectorError(f"{value} is not in {group} after adding it; will retry.")
        credentials = {
            "directory_entry": person,
            "member_value": value,
            "groups": "\n".join(groups),
            "valid_until": expires_at.isoformat(),
            "note": (
                "Your own directory account is a member of these groups until the access ends; sign in as usual. "
                "Applications that cache group membership may need you to sign in again."
            ),
        }
        return Provisioned(external_ref=self.account_name(grant), credentials=credentials, expires_at=expires_at)

    def revoke(self, grant: GrantLike) -> None:
        """Remove the memberships the grant's ledger entry says the portal added, unless another grant holds them.

        Succeeds if the entry is already gone. Reads every group again, and
        deletes the ledger entry only when each membership is gone, kept or held.
        """
        with self._errors(f"revoke grant {int(grant.pk)}"):
            record = self._read_record(self.entry_dn(grant))
            if record is None:
                return
            attr, value = self.member_attribute, record["member"]
            for group in record["added"]:
                if self._held_by_others(grant, group, value) or not self._has(group, attr, value, missing_ok=True):
                    continue  # another grant holds it, or it is gone already (or was never added: no write needed)
                self._remove(group, attr, value)
                # A grant provisioning this membership right now wrote its claim
                # before adding the value: if it did so while we removed it, put it back.
                if self._held_by_others(grant, group, value):
                    self._add(group, attr, value)
                elif self._has(group, attr, value, missing_ok=True):
                    raise ConnectorError(f"{value} is still in {group} after removing it; will retry.")
            self._delete(self.entry_dn(grant))

    def is_present(self, grant: GrantLike) -> bool:
        """Read the ledger: is the grant's entry, deleted only
        after its memberships were confirmed gone, still there?"""
        with self._errors(f"inspect grant {int(grant.pk)}"):
            return self._read_record(self.entry_dn(grant)) is not None

    def extend(self, grant: GrantLike) -> None:
        """Write the new expiry into the grant's ledger entry (LDAP keeps no expiry on a membership)."""
        expires_at = grant.expires_at
        with self._errors(f"extend grant {int(grant.pk)}"):
            record = self._read_record(self.entry_dn(grant))
            if record is None:
                raise ConnectorError(
                    f"Grant {grant.pk} has no ledger entry on target {self.target.name!r}; its membership is gone."
                )
            changes = [(ldap3.MODIFY_DELETE, [f"until: {u}" for u in record["until"]])] if record["until"] else []
            changes.append((ldap3.MODIFY_ADD, [f"until: {_iso(expires_at)}"]))
            self._connection().modify(self.entry_dn(grant), {"description": changes})

    def list_managed(self) -> set[str]:
        """Return the ledger entries of this target ("<prefix>g<id>"):
        every membership the portal added and has not removed."""
        pattern = re.compile(re.escape(self.prefix + "g") + r"[0-9]+")
        search = (
            f"(&(objectClass={LEDGER_CLASS})(cn={escape_filter_chars(self.prefix)}g*)"
            f"(description={escape_filter_chars('target: ' + self.target.name)}))"
        )
        with self._errors("list the ledger"):
            entries = self._search(self.ledger_dn, search, ldap3.LEVEL, ["cn"])
        names = set()
        for entry in entries:
            for cn in entry["attributes"].get("cn", []):
                # The reconciler revokes what we return: only our exact pattern.
                if pattern.fullmatch(cn):
                    names.add(cn)
        return names

    def check(self) -> list[str]:
        """Bind, read the user base and the ledger, and write and
        delete a probe entry in the ledger; warn about clear text."""
        config = self._config()
        warnings = []
        parts = urlsplit(config["url"])
        if parts.scheme == "ldap" and not config.get("start_tls") and not _is_loopback(parts.hostname):
            warnings.append(
                f"{config['url']} is plain LDAP without start_tls: the bind password and every change cross "
                "the network in clear text."
            )
        with self._errors("check"):
            conn = self._connection()
            for key in ("user_base", "ledger_dn"):
                try:
                    self._search(config[key], "(objectClass=*)", ldap3.BASE, ["1.1"])
                except lx.LDAPNoSuchObjectResult:
                    hint = (
                        " (create it: an organizationalUnit the bind DN may write under)" if key == "ledger_dn" else ""
                    )
                    raise ConnectorError(
                        f"Target {self.target.name!r}: {key} {config[key]} does not exist{hint}.", permanent=True
                    ) from None
            probe = f"cn={escape_rdn(self.prefix + 'check')},{self.ledger_dn}"
            try:
                with contextlib.suppress(lx.LDAPNoSuchObjectResult):
                    conn.delete(probe)
                conn.add(
                    probe,
                    [LEDGER_CLASS],
                    {"cn": self.prefix + "check", "description": "jitportal check(): safe to delete"},
                )
                conn.delete(probe)
            except lx.LDAPInsufficientAccessRightsResult:
                raise ConnectorError(
                    f"Target {self.target.name!r}: the bind DN {config['bind_dn']} may not add and delete "
                    f"entries under {self.ledger_dn}.",
                    permanent=True,
                ) from None
            except lx.LDAPObjectClassViolationResult as exc:
                raise ConnectorError(
                    f"Target {self.target.name!r}: the directory refuses {LEDGER_CLASS} entries under "
                    f"{self.ledger_dn}: {_describe(exc)}.",
                    permanent=True,
                ) from None
        return warnings

    def validate_scope(self, scope: dict) -> list[str]:
        """Read each scope group: it must exist; warn if its object classes do not hold the membership attribute."""
        groups = self._groups(scope)
        attr = self.member_attribute
        warnings = []
        with self._errors("check the scope"):
            for group in groups:
                try:
                    entries = self._search(group, "(objectClass=*)", ldap3.BASE, ["objectClass"])
                except lx.LDAPNoSuchObjectResult:
                    raise ConnectorError(
                        f"Group {group} does not exist on target {self.target.name!r}.", permanent=True
                    ) from None
                classes = {c.lower() for c in entries[0]["attributes"].get("objectClass", [])}
                if not classes & GROUP_CLASSES[attr]:
                    warnings.append(
                        f"group {group} is not a {MEMBER_ATTRIBUTES[attr]} (object classes: "
                        f"{', '.join(sorted(classes))}); "
                        f"the directory may refuse {attr} values on it."
                    )
        return warnings

    # -- the person ---------------------------------------------------------------

    def _find_person(self, user) -> tuple[str, str]:
        """Return (entry DN, membership value) of the grant holder's entry, found by the user filter."""
        config = self._config()
        template = config["user_filter"]
        values = {}
        for name in _PLACEHOLDER_RE.findall(template):
            value = str(getattr(user, PLACEHOLDERS[name], "") or "") if user is not None else ""
            if not value:
                who = getattr(user, "username", None) or "the grant's holder"
                raise ConnectorError(
                    f"Target {self.target.name!r} finds people by {template}, but {who} has no {name} in the portal.",
                    permanent=True,
                )
            values[name] = value
        search = _PLACEHOLDER_RE.sub(lambda m: escape_filter_chars(values[m.group(1)]), template)
        uid_attr = config.get("uid_attribute", "uid")
        attrs = [uid_attr] if self.member_attribute == "memberUid" else ["1.1"]
        with self._errors("find the person"):
            try:
                entries = self._search(config["user_base"], search, ldap3.SUBTREE, attrs, size_limit=2)
            except lx.LDAPNoSuchObjectResult:
                raise ConnectorError(
                    f"Target {self.target.name!r}: user_base {config['user_base']} does not exist.", permanent=True
                ) from None
        shown = _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], template)
        if not entries:
            raise ConnectorError(
                f"No entry under {config['user_base']} matches {shown} on target {self.target.name!r}.", permanent=True
            )
        if len(entries) > 1:
            raise ConnectorError(
                f"Several entries under {config['user_base']} match {shown} on target {self.target.name!r}; "
                "the user filter must find one.",
                permanent=True,
            )
        dn = entries[0]["dn"]
        if self.member_attribute != "memberUid":
            return dn, dn
        uids = entries[0]["attributes"].get(uid_attr) or []
        if isinstance(uids, str):
            uids = [uids]
        if len(uids) != 1:
            raise ConnectorError(
                f"{dn} has {len(uids)} {uid_attr} values; memberUid needs exactly one.", permanent=True
            )
        return dn, str(uids[0])

    # -- the ledger ---------------------------------------------------------------

    def _read_record(self, dn: str) -> dict | None:
        try:
            entries = self._search(dn, f"(objectClass={LEDGER_CLASS})", ldap3.BASE, ["description"])
        except lx.LDAPNoSuchObjectResult:
            return None
        if not entries:
            return None
        record = {"member": "", "person": "", "target": "", "until": [], "added": [], "kept": []}
        for line in entries[0]["attributes"].get("description", []):
            key, _, rest = line.partition(": ")
            if key in ("added", "kept", "until"):
                record[key].append(rest)
            elif key in record:
                record[key] = rest
        if not record["member"]:
            raise ConnectorError(f"The ledger entry {dn} has no member line; fix or delete it by hand.", permanent=True)
        return record

    def _ensure_record(self, grant: GrantLike, person: str, value: str, expires_at: datetime.datetime) -> dict:
        dn = self.entry_dn(grant)
        lines = [f"target: {self.target.name}", f"member: {value}", f"person: {person}", f"until: {_iso(expires_at)}"]
        try:
            self._connection().add(dn, [LEDGER_CLASS], {"cn": self.account_name(grant), "description": lines})
        except lx.LDAPEntryAlreadyExistsResult:
            pass  # provisioning again: the entry says what is held already
        except lx.LDAPNoSuchObjectResult:
            raise ConnectorError(
                f"Target {self.target.name!r}: ledger_dn {self.ledger_dn} does not exist.", permanent=True
            ) from None
        record = self._read_record(dn)
        if record is None:
            raise ConnectorError(f"The ledger entry {dn} vanished while provisioning; will retry.")
        return record

    def _hold(self, grant: GrantLike, record: dict, group: str, value: str) -> None:
        """Make `value` a member of `group` for this grant, recording first whether the portal added it."""
        attr, dn = self.member_attribute, self.entry_dn(grant)
        conn = self._connection()
        recorded_added = any(normal_dn(g).lower() == group.lower() for g in record["added"])
        recorded_kept = [g for g in record["kept"] if normal_dn(g).lower() == group.lower()]
        present = self._has(group, attr, value)
        if recorded_added:
            if not present:
                self._add(group, attr, value)
            return
        if recorded_kept:
            if present:
                return
            # The member was removed outside the portal since; the grant still
            # promises it, and from now on the portal is the one who added it.
            conn.modify(dn, {"description": [(ldap3.MODIFY_DELETE, [f"kept: {g}" for g in recorded_kept]),
                                             (ldap3.MODIFY_ADD, [f"added: {group}"])]})  # fmt: skip
            self._add(group, attr, value)
            return
        if present and not self._held_by_others(grant, group, value):
            conn.modify(dn, {"description": [(ldap3.MODIFY_ADD, [f"kept: {group}"])]})
            return
        # The claim goes first: a crash after it leaves a ledger line the
        # reconciler or the next attempt acts on, never an unrecorded member.
        conn.modify(dn, {"description": [(ldap3.MODIFY_ADD, [f"added: {group}"])]})
        if not self._add(group, attr, value) and not present and not self._held_by_others(grant, group, value):
            # Someone outside the portal added the same member between our read and our write.
            conn.modify(
                dn,
                {"description": [(ldap3.MODIFY_DELETE, [f"added: {group}"]), (ldap3.MODIFY_ADD, [f"kept: {group}"])]},
            )

    def _same_member(self, recorded: str, value: str) -> bool:
        if self.member_attribute == "memberUid":
            return recorded == value
        return normal_dn(recorded).lower() == normal_dn(value).lower()

    def _held_by_others(self, grant: GrantLike, group: str, value: str) -> bool:
        """Does another grant's ledger entry (on any target sharing this ledger) hold `value` in `group`?"""
        search = (
            f"(&(objectClass={LEDGER_CLASS})(description={escape_filter_chars('member: ' + value)})"
            f"(description={escape_filter_chars('added: ' + group)})"
            f"(!(cn={escape_filter_chars(self.account_name(grant))})))"
        )
        return bool(self._search(self.ledger_dn, search, ldap3.LEVEL, ["1.1"], size_limit=1))

    # -- groups -------------------------------------------------------------------

    def _has(self, group: str, attr: str, value: str, *, missing_ok: bool = False) -> bool:
        """Ask the directory whether `value` is in `group`; a missing group is an error unless `missing_ok`."""
        try:
            return bool(self._connection().compare(group, attr, value))
        except lx.LDAPNoSuchObjectResult:
            if missing_ok:
                return False  # revoking: a group that is gone holds nobody
            raise ConnectorError(
                f"Group {group} does not exist on target {self.target.name!r}.", permanent=True
            ) from None
        except lx.LDAPNoSuchAttributeResult:
            return False  # OpenLDAP answers so for a group with no value of the attribute at all

    def _add(self, group: str, attr: str, value: str) -> bool:
        """Add `value`; return False if it was there already."""
        try:
            self._connection().modify(group, {attr: [(ldap3.MODIFY_ADD, [value])]})
        except lx.LDAPAttributeOrValueExistsResult:
            return False
        except lx.LDAPNoSuchObjectResult:
            raise ConnectorError(
                f"Group {group} does not exist on target {self.target.name!r}.", permanent=True
            ) from None
        return True

    def _remove(self, group: str, attr: str, value: str) -> None:
        conn = self._connection()
        try:
            conn.modify(group, {attr: [(ldap3.MODIFY_DELETE, [value])]})
        except (lx.LDAPNoSuchAttributeResult, lx.LDAPNoSuchObjectResult):
            pass  # not a member any more, or the group itself is gone
        except lx.LDAPObjectClassViolationResult:
            # The last member of a groupOfNames: swap in the placeholder in one operation.
            conn.modify(group, {attr: [(ldap3.MODIFY_ADD, [self.placeholder_dn]), (ldap3.MODIFY_DELETE, [value])]})

    def _delete(self, dn: str) -> None:
        with contextlib.suppress(lx.LDAPNoSuchObjectResult):
            self._connection().delete(dn)

    def _search(self, base: str, search: str, scope, attributes: list[str], *, size_limit: int = 0) -> list[dict]:
        conn = self._connection()
        conn.search(base, search, scope, attributes=attributes, size_limit=size_limit)
        return [r for r in conn.response if r.get("type") == "searchResEntry"]

    # -- errors -------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, action: str):
        """Turn ldap3's errors into ConnectorError naming the target and what failed (never the password)."""
        where = f"target {self.target.name!r}"
        try:
            yield
        except ConnectorError:
            raise
        except lx.LDAPInsufficientAccessRightsResult as exc:
            raise ConnectorError(
                f"Cannot {action} on {where}: the bind DN lacks the rights ({_describe(exc)}); see the "
                "README's LDAP section.",
                permanent=True,
            ) from None
        except (
            lx.LDAPBusyResult,
            lx.LDAPUnavailableResult,
            lx.LDAPTimeLimitExceededResult,
            lx.LDAPAdminLimitExceededResult,
        ) as exc:
            raise ConnectorError(f"Cannot {action} on {where}: the directory is busy ({_describe(exc)}).") from None
        except lx.LDAPOperationResult as exc:
            permanent = isinstance(exc, (lx.LDAPInvalidDNSyntaxResult, lx.LDAPUndefinedAttributeTypeResult,
                                         lx.LDAPObjectClassViolationResult, lx.LDAPInvalidCredentialsResult,
                                         lx.LDAPInvalidAttributeSyntaxResult, lx.LDAPConfidentialityRequiredResult,
                                         lx.LDAPStrongerAuthRequiredResult, lx.LDAPNamingViolationResult))  # fmt: skip
            raise ConnectorError(f"Cannot {action} on {where}: {_describe(exc)}.", permanent=permanent) from None
        except (lx.LDAPStartTLSError, lx.LDAPCertificateError, lx.LDAPSSLConfigurationError) as exc:
            raise ConnectorError(
                f"Cannot {action} on {where}: TLS failed ({_oneline(exc)}); check ca_file and the URL's host name.",
                permanent=True,
            ) from None
        except lx.LDAPInvalidFilterError as exc:
            raise ConnectorError(
                f"Cannot {action} on {where}: the user filter is not a valid LDAP filter ({exc}).", permanent=True
            ) from None
        except (lx.LDAPCommunicationError, lx.LDAPResponseTimeoutError, OSError) as exc:
            raise ConnectorError(
                f"Cannot {action} on {where}: cannot reach {self.target.config.get('url')} ({_oneline(exc)})."
            ) from None
        except lx.LDAPException as exc:
            raise ConnectorError(f"Cannot {action} on {where}: {_oneline(exc)}.") from None


def _describe(exc: lx.LDAPOperationResult) -> str:
    message = (exc.message or "").strip()
    return f"{exc.description}: {message}" if message else str(exc.description)


def _oneline(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _filter_errors(template) -> list[str]:
    if not isinstance(template, str) or not template.strip():
        return ["user_filter is required, e.g. (mail={email})"]
    names = _PLACEHOLDER_RE.findall(template)
    unknown = sorted({n for n in names if n not in PLACEHOLDERS})
    if unknown:
        return [
            f"user_filter uses {', '.join('{' + n + '}' for n in unknown)}; it may use "
            f"{', '.join('{' + n + '}' for n in PLACEHOLDERS)}"
        ]
    if not names:
        # Without one the filter finds the same entry for everybody.
        return [f"user_filter {template!r} must use at least one of {', '.join('{' + n + '}' for n in PLACEHOLDERS)}"]
    sample = _PLACEHOLDER_RE.sub("x", template)
    if "{" in sample or "}" in sample:
        return [f"user_filter {template!r} has an unmatched brace"]
    try:
        parse_filter(sample, None, True, True, None, False)
    except lx.LDAPInvalidFilterError:
        return [
            f"user_filter {template!r} is not a valid LDAP filter (parenthesised, e.g. "
            f"(&(objectClass=person)(mail={{email}})))"
        ]
    return []
