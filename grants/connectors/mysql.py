"""MySQL / MariaDB connector: one account per grant, given the profile's role or privileges.

Neither server can make an account expire by itself at a given moment:
`PASSWORD EXPIRE INTERVAL` counts whole days, and an expired password only
puts the client in sandbox mode, where it may set a new password and carry
on. Expiry is enforced by the portal: revocation at `expires_at` (and the
sweeper) locks the account, kills its connections and drops it. Sessions
survive `DROP USER` on these servers, so revocation kills first, drops, and
checks again; `is_present` looks at sessions as well as accounts.

Target config: `host` and `port` (what users connect to), optional
`database` (shown in the user's connection string), optional `prefix`
(default "jit_") and `user_host` (host part of the accounts, default "%").
The admin URL, `mysql://user:password@host:port/`, comes from the
environment variable named by `target.secret_env`.

Grant scope: `roles` (MariaDB: at most one, made the account's default role
so it is active at login; MySQL 8: any number, all default) and/or
`privileges`, a list of `{"privileges": "SELECT, INSERT", "on": "appdb.*"}`
with `on` either `db.*` or `db.table`; optional `max_user_connections`.

The admin account needs CREATE USER, PROCESS and CONNECTION ADMIN (or SUPER)
globally, SELECT on mysql.user and mysql.roles_mapping (MySQL:
mysql.role_edges), each role it hands out WITH ADMIN OPTION, the privileges
it hands out WITH GRANT OPTION, and on MariaDB UPDATE on mysql.* when
profiles use roles (SET DEFAULT ROLE ... FOR another account requires it).

Objects the user created (views, routines, triggers, events) stay after the
account is dropped, with the dropped account as their DEFINER.

A connector instance keeps one admin connection and is not thread-safe; use
one instance per task or batch (`with get_connector(target) as c:`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
import secrets
import shlex
import time
from urllib.parse import quote, unquote, urlsplit

import pymysql

from .base import Connector, ConnectorError, GrantLike, Provisioned

DEFAULT_USER_HOST = "%"
DEFAULT_PORT = 3306
CONNECT_TIMEOUT_S = 10
# A worker must not hang forever on a lock held on the target.
READ_TIMEOUT_S = 60
# How long revocation waits for killed connections to leave the process list.
KILL_WAIT_S = 5.0

# MySQL user names are at most 32 characters: keep room for "g<pk>".
_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,15}$")
_USER_HOST_RE = re.compile(r"^[A-Za-z0-9.%_:/-]{1,255}$")
_NAME = r"[A-Za-z0-9_$]{1,64}"
_ON_RE = re.compile(rf"^({_NAME})\.(\*|{_NAME})$")
# Granting on these hands out the server itself (mysql.* holds the accounts).
_SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys"})

# Privileges a profile may hand out on db.table; on db.* the routine-, event-
# and session-level ones too. Nothing global (SUPER, FILE, PROCESS, CREATE
# USER...), no ALL (it includes GRANT OPTION), no GRANT OPTION.
TABLE_PRIVILEGES = frozenset({
    "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "INDEX", "REFERENCES",
    "CREATE VIEW", "SHOW VIEW", "TRIGGER", "DELETE HISTORY",
})
DATABASE_PRIVILEGES = TABLE_PRIVILEGES | {
    "CREATE TEMPORARY TABLES", "LOCK TABLES", "EXECUTE", "CREATE ROUTINE", "ALTER ROUTINE", "EVENT",
}

# Server errors that retrying cannot fix: the admin lacks a privilege, the
# profile names a table, database or role that does not exist, or the
# statement is invalid for this server.
_PERMANENT_ERRORS = frozenset({1044, 1049, 1064, 1142, 1143, 1144, 1146, 1221, 1227, 1410, 1698, 1959})
_UNKNOWN_THREAD = 1094


def mysql_native_password_hash(password: str) -> str:
    """Return the mysql_native_password hash the server stores for `password` ("*" + SHA1(SHA1(pw)))."""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode("utf-8")).digest()).hexdigest().upper()


def quote_ident(name: str) -> str:
    """Quote an identifier with backticks, doubling any backtick inside it."""
    if not name or "\x00" in name:
        raise ValueError("identifiers must be non-empty and contain no NUL")
    return "`" + name.replace("`", "``") + "`"


@dataclasses.dataclass(frozen=True)
class _Server:
    version_text: str
    version: tuple[int, int, int]
    mariadb: bool
    admin: str  # the admin account as information_schema writes it: 'user'@'host'
    privileges: frozenset[str]  # the admin's global privileges, "_" written as " "

    @property
    def has_roles(self) -> bool:
        return self.mariadb or self.version >= (8, 0, 0)


@dataclasses.dataclass(frozen=True)
class _PrivilegeGrant:
    privileges: tuple[str, ...]
    database: str
    table: str | None  # None: every table of the database

    def target_sql(self) -> str:
        if self.table is None:
            # In database-level grants "_" and "%" are wildcards, even inside
            # backticks: `app_db`.* would also cover a database named app-db.
            return quote_ident(self.database.replace("_", "\\_")) + ".*"
        return quote_ident(self.database) + "." + quote_ident(self.table)


class MySQLConnector(Connector):
    """Provision and revoke per-grant accounts on a MySQL or MariaDB server."""

    extends_in_place = True  # nothing on the server holds the expiry: the portal ends access
    prefix_pattern = _PREFIX_RE
    prefix_rule = "lowercase letters, digits and _ (at most 16)"

    def __init__(self, target):
        super().__init__(target)
        self._conn: pymysql.connections.Connection | None = None
        self._server_info: _Server | None = None
        self._admin_params: dict | None = None

    # -- naming -------------------------------------------------------------

    def user_name(self, grant: GrantLike) -> str:
        return self.account_name(grant)

    @property
    def user_host(self) -> str:
        host = self.target.config.get("user_host", DEFAULT_USER_HOST)
        if not isinstance(host, str) or not _USER_HOST_RE.match(host):
            raise ConnectorError(f"Target {self.target.name!r}: user_host {host!r} is not a valid account host.", permanent=True)
        return host

    # -- interface ----------------------------------------------------------

    def provision(self, grant: GrantLike) -> Provisioned:
        """Create or update the grant's account with a fresh password and exactly the scope's roles and privileges."""
        user, user_host = self.user_name(grant), self.user_host
        host, port, database = self._endpoint()
        roles, privileges, max_connections = self._scope(grant)
        password = secrets.token_urlsafe(24)

        # A syntax error message quotes the statement, password clause included.
        with self._errors("provision " + user, hide=(password, mysql_native_password_hash(password))):
            conn = self._admin()
            server = self._server(conn)
            self._check_scope_roles(conn, server, roles)
            with conn.cursor() as cur:
                account = cur.mogrify("%s@%s", (user, user_host))
                identified = self._identified(cur, server, password)
                # Left over if user_host changed since an earlier provisioning; its
                # sessions, if any, are found by name and ended on revoke.
                for other in self._account_hosts(cur, user) - {user_host}:
                    cur.execute("DROP USER IF EXISTS " + cur.mogrify("%s@%s", (user, other)))
                # A new account stays locked until its grants are right.
                cur.execute(f"CREATE USER IF NOT EXISTS {account} {identified} ACCOUNT LOCK")
                # Reconcile: start from nothing, grant exactly the scope. On MariaDB
                # this also revokes roles; on MySQL roles are revoked below.
                cur.execute(f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM {account}")
                if server.has_roles:
                    for role_account in self._granted_roles(cur, server, user, user_host, keep=roles):
                        cur.execute(f"REVOKE {role_account} FROM {account}")
                for role in roles:
                    cur.execute(f"GRANT {quote_ident(role)} TO {account}")
                for item in privileges:
                    cur.execute(f"GRANT {', '.join(item.privileges)} ON {item.target_sql()} TO {account}")
                if server.has_roles:
                    self._set_default_roles(cur, server, account, user, user_host, roles)
                cur.execute(
                    f"ALTER USER {account} {identified} WITH MAX_USER_CONNECTIONS {max_connections} ACCOUNT UNLOCK"
                )

        url_host = f"[{host}]" if ":" in host else host
        dsn = f"mysql://{user}:{quote(password, safe='')}@{url_host}:{port}/{quote(database, safe='')}"
        client = "mariadb" if server.mariadb else "mysql"
        command = shlex.join([client, "-h", host, "-P", port, "-u", user, "-p", *([database] if database else [])])
        credentials = {
            "username": user, "password": password, "host": host, "port": port,
            "database": database, "dsn": dsn, "command": command,
        }
        return Provisioned(external_ref=user, credentials=credentials, expires_at=grant.expires_at)

    def extend(self, grant: GrantLike) -> None:
        """Accept a later expiry: nothing on the server holds it, so only check the account is still there."""
        user = self.user_name(grant)
        with self._errors("extend " + user):
            with self._admin().cursor() as cur:
                if not self._account_hosts(cur, user):
                    raise ConnectorError(f"Account {user} does not exist on the target; it cannot be extended.", permanent=True)

    def revoke(self, grant: GrantLike) -> None:
        """Remove the grant's account: lock it, kill its connections, drop it, check again.

        Succeeds if the account and its sessions are already gone.
        """
        user = self.user_name(grant)
        with self._errors("revoke " + user):
            conn = self._admin()
            with conn.cursor() as cur:
                hosts = sorted(self._account_hosts(cur, user))
                for host in hosts:
                    cur.execute("ALTER USER IF EXISTS " + cur.mogrify("%s@%s", (user, host)) + " ACCOUNT LOCK")
                left = self._end_sessions(cur, user)
                if left:
                    # The account stays locked: no new logins while we retry.
                    raise ConnectorError(f"{left} session(s) of {user} did not end; will retry.")
                for host in hosts:
                    cur.execute("DROP USER IF EXISTS " + cur.mogrify("%s@%s", (user, host)))
                # A login that was past authentication when the lock landed may have
                # slipped in, and it would outlive DROP USER.
                left = self._end_sessions(cur, user)
                if left:
                    raise ConnectorError(f"{left} session(s) of {user} did not end after DROP USER; will retry.")

    def is_present(self, grant: GrantLike) -> bool:
        """Read the target again: does the grant's account, or any session of it, still exist?"""
        user = self.user_name(grant)
        with self._errors("inspect " + user):
            with self._admin().cursor() as cur:
                cur.execute(
                    "SELECT EXISTS (SELECT 1 FROM mysql.user WHERE User = %(u)s)"
                    " OR EXISTS (SELECT 1 FROM information_schema.PROCESSLIST WHERE USER = %(u)s)",
                    {"u": user},
                )
                return bool(cur.fetchone()[0])

    def list_managed(self) -> set[str]:
        """Return the account names on the target that look like ours (prefix + "g" + digits), sessions included."""
        base = self.prefix + "g"
        with self._errors("list accounts"):
            with self._admin().cursor() as cur:
                # "_" in the pattern is a LIKE wildcard and only widens the match; the
                # regular expression below decides (escaping it depends on sql_mode).
                cur.execute(
                    "SELECT User FROM mysql.user WHERE User LIKE %(p)s"
                    " UNION SELECT USER FROM information_schema.PROCESSLIST WHERE USER LIKE %(p)s",
                    {"p": base + "%"},
                )
                rows = cur.fetchall()
        # The reconciler drops what we return: never include a hand-made account
        # such as "jit_gadmin" that merely shares the prefix.
        pattern = re.compile(re.escape(base) + r"[0-9]+")
        return {name for (name,) in rows if pattern.fullmatch(name)}

    def check(self) -> list[str]:
        """Connect and verify the admin account's privileges; return warnings about what would still fail."""
        warnings = []
        with self._errors("check"):
            conn = self._admin()  # also verifies CREATE USER, PROCESS and CONNECTION ADMIN
            server = self._server(conn)
            with conn.cursor() as cur:
                mapping = "mysql.roles_mapping" if server.mariadb else "mysql.role_edges"
                for table in ["mysql.user"] + ([mapping] if server.has_roles else []):
                    try:
                        cur.execute(f"SELECT 1 FROM {table} LIMIT 0")
                    except pymysql.MySQLError as exc:
                        if _code(exc) in (1142, 1044):
                            raise ConnectorError(
                                f"Admin account {server.admin} of target {self.target.name!r} lacks SELECT on {table}.",
                                permanent=True,
                            ) from None
                        raise

                if not server.has_roles:
                    warnings.append(f"MySQL {server.version_text} has no roles: only 'privileges' scopes can be provisioned.")
                elif server.mariadb and not self._can_set_default_roles(cur, server):
                    warnings.append(
                        f"Admin account {server.admin} lacks UPDATE on mysql.*, which MariaDB requires for"
                        " SET DEFAULT ROLE ... FOR another account: scopes with 'roles' will fail."
                    )

                cur.execute("SELECT Host FROM mysql.user WHERE User = '' ORDER BY Host")
                anonymous = [host for (host,) in cur.fetchall()]
                if anonymous:
                    warnings.append(
                        f"Anonymous account(s) exist for host(s) {', '.join(anonymous)}: a login from there under any"
                        " name, a revoked grant's included, may get in as the anonymous account."
                    )

                if server.mariadb:
                    cur.execute(
                        "SELECT @@strict_password_validation, (SELECT COUNT(*) FROM information_schema.PLUGINS"
                        " WHERE PLUGIN_TYPE = 'PASSWORD VALIDATION' AND PLUGIN_STATUS = 'ACTIVE')"
                    )
                    strict, validators = cur.fetchone()
                    if strict and validators:
                        warnings.append(
                            "A password validation plugin is active with strict_password_validation on: the server"
                            " refuses the password hashes this connector sends, so provisioning will fail."
                        )
        return warnings

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(pymysql.MySQLError):
                self._conn.close()
            self._conn = None
            self._server_info = None

    # -- helpers ------------------------------------------------------------

    def _endpoint(self) -> tuple[str, str, str]:
        """Return host, port and database users connect to, from the target config."""
        config = self.target.config
        missing = [key for key in ("host", "port") if not config.get(key)]
        if missing:
            raise ConnectorError(f"Target {self.target.name!r} config lacks {', '.join(missing)}.", permanent=True)
        return str(config["host"]), str(config["port"]), str(config.get("database") or "")

    def _scope(self, grant: GrantLike) -> tuple[list[str], list[_PrivilegeGrant], int]:
        scope = grant.scope
        roles = scope.get("roles") or []
        if not isinstance(roles, list) or not all(
            isinstance(r, str) and r and len(r) <= 128 and "\x00" not in r for r in roles
        ):
            raise ConnectorError("Grant scope 'roles' must be a list of role names.", permanent=True)

        entries = scope.get("privileges") or []
        if not isinstance(entries, list):
            raise ConnectorError("Grant scope 'privileges' must be a list of {privileges, on} entries.", permanent=True)
        privileges = [self._privilege_grant(entry) for entry in entries]
        if not roles and not privileges:
            raise ConnectorError("Grant scope has neither 'roles' nor 'privileges': the account could do nothing.", permanent=True)

        limit = scope.get("max_user_connections", 0)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= 1_000_000:
            raise ConnectorError("Grant scope 'max_user_connections' must be a whole number from 0 (no own limit).", permanent=True)
        return list(dict.fromkeys(roles)), privileges, limit

    def _privilege_grant(self, entry) -> _PrivilegeGrant:
        if not isinstance(entry, dict) or set(entry) != {"privileges", "on"}:
            raise ConnectorError(
                'Each grant scope privileges entry must be {"privileges": "SELECT, ...", "on": "db.*" or "db.table"}.',
                permanent=True,
            )
        on, text = entry["on"], entry["privileges"]
        match = _ON_RE.match(on) if isinstance(on, str) else None
        if not match:
            raise ConnectorError(
                f"Privileges 'on' {on!r} must be db.* or db.table (letters, digits, _ and $ only).", permanent=True
            )
        database, table = match.group(1), None if match.group(2) == "*" else match.group(2)
        if database.lower() in _SYSTEM_SCHEMAS:
            raise ConnectorError(f"Refusing to grant privileges on the system schema {database!r}.", permanent=True)

        allowed = DATABASE_PRIVILEGES if table is None else TABLE_PRIVILEGES
        names = [" ".join(p.split()).upper() for p in text.split(",")] if isinstance(text, str) else [""]
        bad = [n for n in names if n not in allowed]
        if bad:
            level = "db.*" if table is None else "db.table"
            raise ConnectorError(
                f"Privilege(s) {', '.join(repr(n) for n in bad)} cannot be granted on {level} ({on!r});"
                f" allowed: {', '.join(sorted(allowed))}.",
                permanent=True,
            )
        return _PrivilegeGrant(tuple(dict.fromkeys(names)), database, table)

    def _check_scope_roles(self, conn, server: _Server, roles: list[str]) -> None:
        if not roles:
            return
        if not server.has_roles:
            raise ConnectorError(f"Target {self.target.name!r} runs MySQL {server.version_text}, which has no roles.", permanent=True)
        if server.mariadb and len(roles) > 1:
            raise ConnectorError(
                "MariaDB activates only one role at login: give the profile one role (a role can be granted others).",
                permanent=True,
            )
        # Roles are rows of mysql.user: on MariaDB with is_role, on MySQL accounts at host '%'.
        where = "is_role = 'Y'" if server.mariadb else "Host = '%%'"
        with conn.cursor() as cur:
            cur.execute(
                "SELECT User, Super_priv = 'Y' OR Grant_priv = 'Y' OR Create_user_priv = 'Y' OR File_priv = 'Y'"
                f" FROM mysql.user WHERE {where} AND User IN %s",
                [roles],
            )
            found = dict(cur.fetchall())
        missing = [r for r in roles if r not in found]
        if missing:
            raise ConnectorError(
                f"Role(s) {', '.join(missing)} do not exist on target {self.target.name!r}; fix the access profile.",
                permanent=True,
            )
        # Only the role's own global privileges are looked at, not roles granted to it.
        admins = [r for r in roles if found[r]]
        if admins:
            raise ConnectorError(
                f"Refusing to grant role(s) {', '.join(admins)}: they hold SUPER, FILE, CREATE USER or GRANT OPTION globally.",
                permanent=True,
            )

    def _identified(self, cur, server: _Server, password: str) -> str:
        if server.mariadb:
            # Send the hash, not the password: MariaDB shows statements in the
            # process list and writes them to the general and binary logs.
            return "IDENTIFIED BY PASSWORD " + cur.mogrify("%s", (mysql_native_password_hash(password),))
        # MySQL 8 rewrites the password out of its logs; its default plugin
        # (caching_sha2_password) accepts no precomputed hash we could make.
        return "IDENTIFIED BY " + cur.mogrify("%s", (password,))

    def _account_hosts(self, cur, user: str) -> set[str]:
        cur.execute("SELECT Host FROM mysql.user WHERE User = %s", [user])
        return {host for (host,) in cur.fetchall()}

    def _granted_roles(self, cur, server: _Server, user: str, host: str, *, keep: list[str]) -> list[str]:
        """Return the role grants of an account that are not in `keep`, as literals for REVOKE."""
        if server.mariadb:
            cur.execute("SELECT Role FROM mysql.roles_mapping WHERE User = %s AND Host = %s", [user, host])
            return [quote_ident(role) for (role,) in cur.fetchall() if role not in keep]
        cur.execute("SELECT FROM_USER, FROM_HOST FROM mysql.role_edges WHERE TO_USER = %s AND TO_HOST = %s", [user, host])
        return [
            cur.mogrify("%s@%s", (role, role_host))
            for role, role_host in cur.fetchall()
            if not (role in keep and role_host == "%")
        ]

    def _set_default_roles(self, cur, server: _Server, account: str, user: str, host: str, roles: list[str]) -> None:
        if not server.mariadb:
            names = ", ".join(quote_ident(r) for r in roles) if roles else "NONE"
            cur.execute(f"SET DEFAULT ROLE {names} TO {account}")
            return
        # SET DEFAULT ROLE ... FOR needs UPDATE on mysql.*: skip it when nothing
        # changes, so privilege-only scopes work without that privilege.
        cur.execute("SELECT default_role FROM mysql.user WHERE User = %s AND Host = %s", [user, host])
        row = cur.fetchone()
        current = row[0] if row else ""
        wanted = roles[0] if roles else ""
        if current != wanted:
            cur.execute(f"SET DEFAULT ROLE {quote_ident(wanted) if wanted else 'NONE'} FOR {account}")

    def _end_sessions(self, cur, user: str) -> int:
        """Kill every connection of `user` and wait for them to leave; return how many are left."""
        deadline = time.monotonic() + KILL_WAIT_S
        while True:
            cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s AND ID <> CONNECTION_ID()", [user])
            ids = [int(pid) for (pid,) in cur.fetchall()]
            if not ids or time.monotonic() > deadline:
                return len(ids)
            for pid in ids:
                try:
                    cur.execute(f"KILL CONNECTION {pid}")
                except pymysql.MySQLError as exc:
                    if _code(exc) != _UNKNOWN_THREAD:  # ended between the read and the kill
                        raise
            # A killed connection leaves the list when its thread notices.
            time.sleep(0.1)

    def _can_set_default_roles(self, cur, server: _Server) -> bool:
        if "UPDATE" in server.privileges:
            return True
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.SCHEMA_PRIVILEGES"
            " WHERE GRANTEE = %s AND TABLE_SCHEMA = 'mysql' AND PRIVILEGE_TYPE = 'UPDATE'",
            [server.admin],
        )
        return cur.fetchone()[0] > 0

    # -- connections --------------------------------------------------------

    def _admin(self):
        if self._conn is None or not self._conn.open:
            self.close()
            params = self._params()
            conn = pymysql.connect(
                **params, autocommit=True, charset="utf8mb4", program_name="jitportal",
                connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S, write_timeout=READ_TIMEOUT_S,
            )
            self._conn = conn
            try:
                self._require_admin_privileges(self._server(conn))
            except BaseException:
                self.close()
                raise
        return self._conn

    def _server(self, conn) -> _Server:
        if self._server_info is None:
            with conn.cursor() as cur:
                cur.execute("SELECT VERSION(), CURRENT_USER()")
                version_text, current_user = cur.fetchone()
                name, _, host = current_user.rpartition("@")
                admin = f"'{name}'@'{host}'"
                cur.execute("SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = %s", [admin])
                privileges = frozenset(p.replace("_", " ") for (p,) in cur.fetchall())
            numbers = re.match(r"(\d+)\.(\d+)\.(\d+)", version_text)
            version = tuple(int(n) for n in numbers.groups()) if numbers else (0, 0, 0)
            self._server_info = _Server(version_text, version, "mariadb" in version_text.lower(), admin, privileges)
        return self._server_info

    def _require_admin_privileges(self, server: _Server) -> None:
        # Without PROCESS the process list silently shows only our own
        # connections, and revocation would report sessions gone that are not.
        missing = [p for p in ("CREATE USER", "PROCESS") if p not in server.privileges]
        if not server.privileges & {"CONNECTION ADMIN", "SUPER"}:
            missing.append("CONNECTION ADMIN (or SUPER)")
        if missing:
            raise ConnectorError(
                f"Admin account {server.admin} of target {self.target.name!r} lacks {', '.join(missing)} on *.*"
                " (granted directly, not through a role).",
                permanent=True,
            )

    def _params(self) -> dict:
        if self._admin_params is None:
            url = self.admin_secret()
            malformed = ConnectorError(
                f"The admin URL of target {self.target.name!r} is malformed; expected mysql://user:password@host:port/.",
                permanent=True,
            )
            try:
                parts = urlsplit(url)
                port = parts.port or DEFAULT_PORT
            except ValueError:
                # urllib's message may quote the netloc, which holds the password.
                raise malformed from None
            if parts.scheme not in ("mysql", "mariadb") or not parts.hostname or not parts.username:
                raise malformed
            if parts.query or parts.path.strip("/"):
                raise ConnectorError(
                    f"The admin URL of target {self.target.name!r} takes no database or options.", permanent=True
                )
            self._admin_params = {
                "host": parts.hostname,
                "port": port,
                "user": unquote(parts.username),
                "password": unquote(parts.password or ""),
            }
        return self._admin_params

    @contextlib.contextmanager
    def _errors(self, action: str, *, hide: tuple[str, ...] = ()):
        """Turn driver errors into ConnectorError, without the admin password (or `hide`) in the message."""
        try:
            yield
        except ConnectorError:
            raise
        except pymysql.MySQLError as exc:
            code = _code(exc)
            if isinstance(exc, pymysql.err.InterfaceError) or code >= 2000 or code in (1045, 1040):
                # Client-side or connection-level: start afresh on the next call.
                self.close()
                where = self._where()
                raise ConnectorError(f"Cannot {action} on target {self.target.name!r}{where}: {self._scrub(exc, hide)}") from None
            raise ConnectorError(
                f"Cannot {action} on target {self.target.name!r}: {self._scrub(exc, hide)}", permanent=code in _PERMANENT_ERRORS
            ) from None

    def _where(self) -> str:
        params = self._admin_params or {}
        return f" ({params['host']}:{params['port']})" if params.get("host") else ""

    def _scrub(self, exc: Exception, hide: tuple[str, ...] = ()) -> str:
        args = getattr(exc, "args", ())
        text = (str(args[1]) if len(args) >= 2 else str(exc)) or type(exc).__name__
        code = _code(exc)
        message = " ".join(text.split()) + (f" [{code}]" if code else "")
        for secret in ((self._admin_params or {}).get("password"), *hide):
            if secret:
                message = message.replace(secret, "***").replace(quote(secret, safe=""), "***")
        return message


def _code(exc: Exception) -> int:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else 0
