"""PostgreSQL connector: one LOGIN role per grant, member of the profile's group roles.

The target itself enforces expiry: the role's `VALID UNTIL` refuses new
password logins after `expires_at` even if the portal's workers are down.
PostgreSQL does not end sessions opened before that moment, and trust
authentication ignores `VALID UNTIL` altogether (`check()` warns about it);
revocation terminates sessions and drops the role.

Target config: `host`, `port`, `dbname` (what users connect to), optional
`prefix` (default "jit_") and `sslmode`. The admin DSN comes from the
environment variable named by `target.secret_env`.

Grant scope: `roles` (group roles to grant membership of), optional
`owner_role` (receives the objects the user created, on revoke) and optional
`connection_limit`.

A connector instance keeps one admin connection and is not thread-safe; use
one instance per task or batch (`with get_connector(target) as c:`).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import hmac
import re
import secrets
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .base import Connector, ConnectorError, GrantLike, Provisioned

CONNECT_TIMEOUT_S = 10
# A worker must not hang forever on a lock held on the target.
STATEMENT_TIMEOUT_MS = 60_000
# pg_terminate_backend(pid, timeout) waits up to this long for the backend to exit (PG 14+).
TERMINATE_WAIT_MS = 5_000
SCRAM_ITERATIONS = 4096

# Role names are at most 63 bytes; a longer name would be truncated silently
# by the server and no longer match what we look up. Keep room for "g<pk>".
_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")


def scram_sha256_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """Compute the SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677).

    Sending the verifier instead of the password keeps the clear password out
    of server logs and pg_stat_activity. The password must be ASCII (ours come
    from `secrets.token_urlsafe`), so SASLprep normalisation is the identity.
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class PostgresConnector(Connector):
    """Provision and revoke per-grant LOGIN roles on a PostgreSQL server."""

    extends_in_place = True
    # Role names are at most 63 bytes; a longer name would be truncated
    # silently and no longer match what we look up. Keep room for "g<pk>".
    prefix_pattern = _PREFIX_RE

    def __init__(self, target):
        super().__init__(target)
        self._conn: psycopg.Connection | None = None
        self._admin_dsn: str | None = None

    # -- naming -------------------------------------------------------------

    def role_name(self, grant: GrantLike) -> str:
        return self.account_name(grant)

    # -- interface ----------------------------------------------------------

    def provision(self, grant: GrantLike) -> Provisioned:
        """Create or update the grant's role with a fresh password and exactly the scope's memberships."""
        role = self.role_name(grant)
        host, port, dbname = self._endpoint()
        wanted = self._scope_roles(grant)
        limit = int(grant.scope.get("connection_limit", -1))
        expires_at = grant.expires_at
        if expires_at.tzinfo is None:
            raise ValueError("grant.expires_at must be timezone-aware")
        valid_until = expires_at.astimezone(datetime.timezone.utc).isoformat()
        password = secrets.token_urlsafe(24)

        with self._errors("provision " + role):
            conn = self._admin()
            with conn.transaction():
                # Two workers provisioning the same grant would race on CREATE ROLE.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [role])
                self._check_scope_roles(conn, wanted)
                attributes = sql.SQL(
                    "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT NOREPLICATION NOBYPASSRLS"
                    " CONNECTION LIMIT {limit} PASSWORD {password} VALID UNTIL {until}"
                ).format(
                    limit=sql.Literal(limit),
                    password=sql.Literal(scram_sha256_verifier(password)),
                    until=sql.Literal(valid_until),
                )
                verb = "ALTER" if self._role_oid(conn, role) else "CREATE"
                conn.execute(sql.SQL(verb + " ROLE {} WITH ").format(sql.Identifier(role)) + attributes)

                current = set(self._memberships(conn, role))
                for group in sorted(set(wanted) - current):
                    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(role)))
                for group in sorted(current - set(wanted)):
                    conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), sql.Identifier(role)))

        url_host = f"[{host}]" if ":" in host else host
        dsn = f"postgresql://{role}:{quote(password, safe='')}@{url_host}:{port}/{quote(dbname, safe='')}"
        if self.target.config.get("sslmode"):
            dsn += "?sslmode=" + quote(str(self.target.config["sslmode"]), safe="")
        credentials = {"username": role, "password": password, "host": host, "port": port, "dbname": dbname, "dsn": dsn}
        return Provisioned(external_ref=role, credentials=credentials, expires_at=expires_at)

    def extend(self, grant: GrantLike) -> None:
        """Move the role's VALID UNTIL to the grant's new expiry; the password stays."""
        role = self.role_name(grant)
        if grant.expires_at.tzinfo is None:
            raise ValueError("grant.expires_at must be timezone-aware")
        valid_until = grant.expires_at.astimezone(datetime.timezone.utc).isoformat()
        with self._errors("extend " + role):
            conn = self._admin()
            if not self._role_oid(conn, role):
                raise ConnectorError(f"Role {role} does not exist on the target; it cannot be extended.", permanent=True)
            conn.execute(sql.SQL("ALTER ROLE {} VALID UNTIL {}").format(sql.Identifier(role), sql.Literal(valid_until)))

    def revoke(self, grant: GrantLike) -> None:
        """Remove the grant's role: stop logins, end sessions, hand over or drop its objects, drop it.

        Succeeds if the role is already gone. The steps are `revoke_many`'s,
        for a batch of one.
        """
        errors = self.revoke_many([grant])
        if errors:
            raise ConnectorError(errors[grant.pk])

    def revoke_many(self, grants: list[GrantLike]) -> dict[int, str]:
        """Revoke several grants in a handful of round trips; return {grant pk: error} for those left.

        For the whole batch at once: stop logins and take away the group
        memberships (one transaction), end sessions, hand over or drop what
        the roles own in every database that holds some, end sessions again,
        and drop the roles that have none left. Roles already gone count as
        revoked.
        """
        roles = {self.role_name(g): g for g in grants}
        errors: dict[int, str] = {}
        with self._errors(f"revoke {', '.join(roles)}"):
            conn = self._admin()
            oids = dict(conn.execute("SELECT rolname::text, oid FROM pg_roles WHERE rolname = ANY(%s)", [list(roles)]).fetchall())
            if not oids:
                return errors
            members = conn.execute(
                "SELECT r.rolname::text, g.rolname::text FROM pg_auth_members m"
                " JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member"
                " WHERE m.member = ANY(%s)",
                [list(oids.values())],
            ).fetchall()
            statements = [sql.SQL("ALTER ROLE {} WITH NOLOGIN PASSWORD NULL").format(sql.Identifier(r)) for r in oids]
            statements += [sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(g), sql.Identifier(r)) for r, g in members]
            with conn.transaction():
                # No parameters: psycopg sends the statements as one simple query.
                conn.execute(sql.SQL("; ").join(statements))
            self._terminate_sessions(conn, list(oids.values()))

            for owner_role in {g.scope.get("owner_role") for g in grants} - {None, ""}:
                if not self._role_oid(conn, owner_role):
                    raise ConnectorError(f"Owner role {owner_role!r} does not exist on target {self.target.name!r}.", permanent=True)
            by_oid = {oid: name for name, oid in oids.items()}
            # pg_shdepend rows with dbid 0 are shared objects (databases,
            # tablespaces); DROP OWNED run in any database clears those, so
            # the admin database stands in for them.
            deps = conn.execute(
                "SELECT DISTINCT s.refobjid, coalesce(d.datname, current_database()) FROM pg_shdepend s"
                " LEFT JOIN pg_database d ON d.oid = s.dbid"
                " WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = ANY(%s) ORDER BY 1, 2",
                [list(oids.values())],
            ).fetchall()
            for oid, dbname in deps:
                role = by_oid[oid]
                self._clean_owned(dbname, role, roles[role].scope.get("owner_role"))

            # A session that was authenticating when NOLOGIN committed may have slipped in.
            self._terminate_sessions(conn, list(oids.values()))
            left = dict(conn.execute(
                "SELECT usesysid, count(*) FROM pg_stat_activity WHERE usesysid = ANY(%s) GROUP BY 1", [list(oids.values())]
            ).fetchall())
            droppable = []
            for name, oid in oids.items():
                if left.get(oid):
                    # Dropping now would orphan the sessions: PostgreSQL lets them run on
                    # with no role name, and we could no longer find them. Retry later.
                    errors[roles[name].pk] = f"{left[oid]} session(s) of {name} did not end; will retry."
                else:
                    droppable.append(name)
            if droppable:
                try:
                    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.SQL(", ").join(map(sql.Identifier, droppable))))
                except psycopg.Error:
                    # One role that cannot go fails the statement: drop them one by one.
                    for name in droppable:
                        try:
                            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
                        except psycopg.Error as exc:
                            errors[roles[name].pk] = f"Cannot drop {name}: {self._scrub(exc)}"
        return errors

    def is_present(self, grant: GrantLike) -> bool:
        """Read the target again: does the grant's role or any session of it still exist?"""
        return grant.pk in self.present_many([grant])

    def present_many(self, grants: list[GrantLike]) -> set[int]:
        """Read the target again; return the pks of the grants whose role or a session still exists."""
        roles = {self.role_name(g): g.pk for g in grants}
        if not roles:
            return set()
        with self._errors("inspect " + ", ".join(roles)):
            rows = self._admin().execute(
                "SELECT rolname::text FROM pg_roles WHERE rolname = ANY(%(r)s)"
                " UNION SELECT usename::text FROM pg_stat_activity WHERE usename = ANY(%(r)s)",
                {"r": list(roles)},
            ).fetchall()
        return {roles[name] for (name,) in rows}

    def list_managed(self) -> set[str]:
        """Return the names of the roles on the target that look like ours (prefix + "g" + digits)."""
        base = self.prefix + "g"
        with self._errors("list roles"):
            rows = self._admin().execute(
                r"SELECT rolname FROM pg_roles WHERE rolname LIKE %s ESCAPE '\'", [_like_escape(base) + "%"]
            ).fetchall()
        # The reconciler drops what we return: never include a hand-made role
        # such as "jit_gadmin" that merely shares the prefix.
        pattern = re.compile(re.escape(base) + r"[0-9]+")
        return {name for (name,) in rows if pattern.fullmatch(name)}

    def check(self) -> list[str]:
        """Connect and verify the admin role; return warnings about pg_hba.conf lines that defeat expiry."""
        with self._errors("check"):
            conn = self._admin()
            user, can_create, version = conn.execute(
                "SELECT current_user, rolsuper OR rolcreaterole, current_setting('server_version_num')::int"
                " FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            if not can_create:
                raise ConnectorError(f"Admin role {user!r} of target {self.target.name!r} lacks CREATEROLE.", permanent=True)
            if version < 140000:
                # pg_terminate_backend(pid, timeout) appeared in PostgreSQL 14.
                raise ConnectorError(f"Target {self.target.name!r} runs PostgreSQL {version}; 14 or later is required.", permanent=True)
            try:
                rules = conn.execute(
                    "SELECT line_number, type, database, user_name, auth_method, error FROM pg_hba_file_rules"
                ).fetchall()
            except psycopg.errors.InsufficientPrivilege:
                return [f"Could not read pg_hba_file_rules as {user!r}: cannot check that no trust line bypasses password expiry."]
        return self._hba_warnings(rules)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- helpers ------------------------------------------------------------

    def _endpoint(self) -> tuple[str, str, str]:
        """Return host, port and dbname users connect to, from the target config."""
        config = self.target.config
        missing = [key for key in ("host", "port", "dbname") if not config.get(key)]
        if missing:
            raise ConnectorError(f"Target {self.target.name!r} config lacks {', '.join(missing)}.", permanent=True)
        return str(config["host"]), str(config["port"]), str(config["dbname"])

    def _scope_roles(self, grant: GrantLike) -> list[str]:
        roles = grant.scope.get("roles") or []
        if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
            raise ConnectorError("Grant scope 'roles' must be a list of role names.", permanent=True)
        return roles

    def _check_scope_roles(self, conn: psycopg.Connection, wanted: list[str]) -> None:
        rows = conn.execute("SELECT rolname, rolsuper FROM pg_roles WHERE rolname = ANY(%s)", [wanted]).fetchall()
        found = {name: is_super for name, is_super in rows}
        missing = [r for r in wanted if r not in found]
        if missing:
            raise ConnectorError(
                f"Role(s) {', '.join(missing)} do not exist on target {self.target.name!r}; fix the access profile.",
                permanent=True,
            )
        # Membership lets the user SET ROLE to the group: a superuser group would make them one.
        supers = [r for r in wanted if found[r]]
        if supers:
            raise ConnectorError(f"Refusing to grant superuser role(s) {', '.join(supers)}.", permanent=True)

    def _role_oid(self, conn: psycopg.Connection, role: str) -> int | None:
        row = conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s", [role]).fetchone()
        return row[0] if row else None

    def _memberships(self, conn: psycopg.Connection, role: str) -> list[str]:
        rows = conn.execute(
            "SELECT DISTINCT g.rolname FROM pg_auth_members m"
            " JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member"
            " WHERE r.rolname = %s ORDER BY 1",
            [role],
        ).fetchall()
        return [name for (name,) in rows]

    def _terminate_sessions(self, conn: psycopg.Connection, oids: list[int]) -> None:
        conn.execute(
            "SELECT pg_terminate_backend(pid, %s) FROM pg_stat_activity WHERE usesysid = ANY(%s) AND pid <> pg_backend_pid()",
            [TERMINATE_WAIT_MS, oids],
        )

    def _clean_owned(self, dbname: str, role: str, owner_role: str | None) -> None:
        # REASSIGN/DROP OWNED only see the current database: connect to each one.
        ident = sql.Identifier(role)
        with self._connect(dbname) as conn, conn.transaction():
            if owner_role:
                conn.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(ident, sql.Identifier(owner_role)))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))

    def _hba_warnings(self, rules) -> list[str]:
        prefix = self.prefix
        sample = prefix + "g1"
        warnings = []
        for line, kind, databases, users, method, error in rules:
            if error:
                warnings.append(f"pg_hba.conf line {line} has an error: {error}")
                continue
            if method != "trust":
                continue
            reasons = []
            for user in users or []:
                if user == "all":
                    reasons.append("all users")
                elif user.startswith(prefix):
                    reasons.append(f"user {user}")
                elif user.startswith("+"):
                    # Group membership: our roles are members of the profiles' groups.
                    reasons.append(f"members of {user[1:]}")
                elif user.startswith("/") and _regex_matches(user[1:], sample):
                    reasons.append(f"users matching {user}")
            if reasons:
                warnings.append(
                    f"pg_hba.conf line {line} ({kind}, databases {', '.join(databases or [])}) uses trust for "
                    f"{', '.join(reasons)}: a grant's VALID UNTIL does not stop those logins."
                )
        return warnings

    # -- connections --------------------------------------------------------

    def _admin(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self._connect(None)
        return self._conn

    def _connect(self, dbname: str | None) -> psycopg.Connection:
        dsn = self._dsn()
        if dbname is not None:
            dsn = make_conninfo(dsn, dbname=dbname)
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name="jitportal")
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(STATEMENT_TIMEOUT_MS)))
        return conn

    def _dsn(self) -> str:
        if self._admin_dsn is None:
            dsn = self.admin_secret()
            try:
                conninfo_to_dict(dsn)
            except psycopg.Error:
                # libpq's parse error quotes the string, which holds the password.
                raise ConnectorError(f"The admin DSN of target {self.target.name!r} is malformed.", permanent=True) from None
            self._admin_dsn = dsn
        return self._admin_dsn

    @contextlib.contextmanager
    def _errors(self, action: str):
        """Turn driver errors into ConnectorError, without the admin password in the message."""
        try:
            yield
        except ConnectorError:
            raise
        except psycopg.OperationalError as exc:
            where = self._where()
            raise ConnectorError(f"Cannot {action} on target {self.target.name!r}{where}: {self._scrub(exc)}") from None
        except psycopg.Error as exc:
            raise ConnectorError(f"Cannot {action} on target {self.target.name!r}: {self._scrub(exc)}") from None

    def _where(self) -> str:
        try:
            params = conninfo_to_dict(self._admin_dsn or "")
        except psycopg.Error:
            return ""
        host, port = params.get("host") or params.get("hostaddr"), params.get("port")
        return f" ({host}:{port})" if host else ""

    def _scrub(self, exc: Exception) -> str:
        message = " ".join(str(exc).split())
        try:
            password = conninfo_to_dict(self._admin_dsn or "").get("password")
        except psycopg.Error:
            password = None
        if password:
            message = message.replace(password, "***").replace(quote(password, safe=""), "***")
        return message


def _regex_matches(pattern: str, name: str) -> bool:
    try:
        return re.search(pattern, name) is not None
    except re.error:
        return True  # cannot tell: err on the side of warning
