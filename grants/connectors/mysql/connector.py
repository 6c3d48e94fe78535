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
`validate_scope` (called by `catalog plan` and by every provisioning) follows
the roles through the roles granted to them and refuses any that holds a
global privilege, privileges on a system schema, GRANT OPTION, ALTER ROUTINE,
PROXY or a role WITH ADMIN OPTION; on MariaDB it refuses roles next to
privileges that create code (DEFINER = CURRENT_ROLE would hand the code to
the role).

The admin account needs CREATE USER, PROCESS and CONNECTION ADMIN (or SUPER)
globally, SELECT on mysql.user and mysql.roles_mapping (MySQL:
mysql.role_edges), each role it hands out WITH ADMIN OPTION, the privileges
it hands out WITH GRANT OPTION, and on MariaDB UPDATE on mysql.* when
profiles use roles (SET DEFAULT ROLE ... FOR another account requires it).
To check what roles hold it reads mysql.global_priv (MySQL: mysql.global_grants),
mysql.db, mysql.tables_priv, mysql.columns_priv, mysql.procs_priv and
mysql.proxies_priv. Where a scope lets the user create views, routines,
triggers or events, the admin needs DROP, ALTER ROUTINE, TRIGGER and EVENT
there: without them it could neither see nor drop what the user made.

Views, routines, triggers and events whose DEFINER is a grant's account are
dropped at revocation and listed in the inventory (`note_object`); tables
have no owner on these servers, so the tables a user with CREATE made stay.

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

from .. import digest as activity
from ..base import Connector, ConnectorError, GrantLike, Provisioned

DEFAULT_USER_HOST = "%"
DEFAULT_PORT = 3306
CONNECT_TIMEOUT_S = 10
# A worker must not hang forever on a lock held on the target.
READ_TIMEOUT_S = 60
# How long a statement waits for a table lock before failing (and being retried).
LOCK_WAIT_S = 30
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
# USER...), no ALL (it includes GRANT OPTION), no GRANT OPTION, no ALTER ROUTINE
# (see _REFUSED).
TABLE_PRIVILEGES = frozenset(
    {
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "CREATE",
        "DROP",
        "ALTER",
        "INDEX",
        "REFERENCES",
        "CREATE VIEW",
        "SHOW VIEW",
        "TRIGGER",
        "DELETE HISTORY",
    }
)
DATABASE_PRIVILEGES = TABLE_PRIVILEGES | {
    "CREATE TEMPORARY TABLES",
    "LOCK TABLES",
    "EXECUTE",
    "CREATE ROUTINE",
    "EVENT",
}
# Privileges no scope may carry, at any level, directly or through a role.
_REFUSED = {
    "GRANT OPTION": "it lets the user hand its privileges to other accounts, where they outlive the grant",
    # The server lets ALTER ROUTINE change SQL SECURITY INVOKER to DEFINER on
    # a routine someone else defined: a DBA's routine would then run with the
    # DBA's rights for whoever may execute it, after the grant too.
    # CREATE ROUTINE already lets a user alter and drop the routines it makes.
    "ALTER ROUTINE": "it lets the user switch anyone's routine there to SQL SECURITY DEFINER, which then runs with"
    " its definer's rights (CREATE ROUTINE already covers the user's own routines)",
    "PROXY": "it lets the user act as another account",
}

# Privileges that let a grant user make code that runs as its DEFINER (views
# and routines with SQL SECURITY DEFINER, every trigger and event) or as
# whoever uses it (SQL SECURITY INVOKER). Revocation drops what the grant's
# account made; to see and drop it the admin needs, on the same database,
# the privilege mapped here.
CODE_PRIVILEGES = {"CREATE VIEW": "DROP", "CREATE ROUTINE": "ALTER ROUTINE", "TRIGGER": "TRIGGER", "EVENT": "EVENT"}
_CODE_KINDS = {"CREATE VIEW": "views", "CREATE ROUTINE": "routines", "TRIGGER": "triggers", "EVENT": "events"}

# MariaDB 10.4+ keeps an account's global privileges as a bit set in
# mysql.global_priv; mysql.user (a view there) shows only the first 30 bits.
_MARIADB_GLOBAL_BITS = (
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "CREATE",
    "DROP",
    "RELOAD",
    "SHUTDOWN",
    "PROCESS",
    "FILE",
    "GRANT OPTION",
    "REFERENCES",
    "INDEX",
    "ALTER",
    "SHOW DATABASES",
    "SUPER",
    "CREATE TEMPORARY TABLES",
    "LOCK TABLES",
    "EXECUTE",
    "REPLICATION SLAVE",
    "BINLOG MONITOR",
    "CREATE VIEW",
    "SHOW VIEW",
    "CREATE ROUTINE",
    "ALTER ROUTINE",
    "CREATE USER",
    "EVENT",
    "TRIGGER",
    "CREATE TABLESPACE",
    "DELETE HISTORY",
    "SET USER",
    "FEDERATED ADMIN",
    "CONNECTION ADMIN",
    "READ_ONLY ADMIN",
    "REPLICATION SLAVE ADMIN",
    "REPLICATION MASTER ADMIN",
    "BINLOG ADMIN",
    "BINLOG REPLAY",
    "SLAVE MONITOR",
    "SHOW CREATE ROUTINE",
)
# Privilege columns of mysql.user and mysql.db whose names do not say the privilege.
_PRIV_COLUMNS = {
    "Grant_priv": "GRANT OPTION",
    "Show_db_priv": "SHOW DATABASES",
    "Create_tmp_table_priv": "CREATE TEMPORARY TABLES",
    "Repl_slave_priv": "REPLICATION SLAVE",
    "Repl_client_priv": "REPLICATION CLIENT",
}
# What revocation looks for: objects of these kinds whose DEFINER's user part
# is one of the grant accounts (information_schema writes DEFINER as user@host),
# in the schemas given (naming them lets the server open only those; a
# trigger lives in its table's schema, by which the server looks it up).
# Triggers and events first: they fire by themselves.
_DEFINED = (
    (
        "SELECT TRIGGER_SCHEMA, TRIGGER_NAME, EVENT_OBJECT_TABLE, 'TRIGGER', DEFINER FROM information_schema.TRIGGERS"
        " WHERE EVENT_OBJECT_SCHEMA IN %(schemas)s AND SUBSTRING_INDEX(DEFINER, '@', 1) IN %(users)s"
    ),
    (
        "SELECT EVENT_SCHEMA, EVENT_NAME, '', 'EVENT', DEFINER FROM information_schema.EVENTS"
        " WHERE EVENT_SCHEMA IN %(schemas)s AND SUBSTRING_INDEX(DEFINER, '@', 1) IN %(users)s"
    ),
    (
        "SELECT TABLE_SCHEMA, TABLE_NAME, '', 'VIEW', DEFINER FROM information_schema.VIEWS"
        " WHERE TABLE_SCHEMA IN %(schemas)s AND SUBSTRING_INDEX(DEFINER, '@', 1) IN %(users)s"
    ),
    # PACKAGE BODY sorts before PACKAGE: a body goes before its specification.
    (
        "SELECT ROUTINE_SCHEMA, ROUTINE_NAME, '', ROUTINE_TYPE, DEFINER FROM information_schema.ROUTINES"
        " WHERE ROUTINE_SCHEMA IN %(schemas)s AND SUBSTRING_INDEX(DEFINER, '@', 1) IN %(users)s"
        " ORDER BY ROUTINE_TYPE DESC"
    ),
)
# Grant tables of privileges on one table, column or routine, and the level each is.
_OBJECT_GRANTS = (
    ("mysql.tables_priv", "table", "SELECT User, Host, Db, Table_name, Table_priv FROM mysql.tables_priv"),
    ("mysql.columns_priv", "column", "SELECT User, Host, Db, Table_name, Column_priv FROM mysql.columns_priv"),
    ("mysql.procs_priv", "routine", "SELECT User, Host, Db, Routine_name, Proc_priv FROM mysql.procs_priv"),
)
# Refusals of the admin account: it may not see or drop that object.
_DENIED = frozenset({1044, 1142, 1227, 1370})

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

    def held(self) -> _Held:
        """Return this entry as what the account will hold, in the form the grant tables give for roles."""
        privileges = frozenset(self.privileges)
        if self.table is None:
            return _Held("the scope's privileges", "database", self.database.replace("_", "\\_"), "", privileges)
        return _Held("the scope's privileges", "table", self.database, self.table, privileges)


@dataclasses.dataclass(frozen=True)
class _Held:
    """Privileges a holder (a scope role, a role it reaches, PUBLIC) has at one level, as the grant tables say."""

    holder: str  # for a reached role the path to it: "app_reader -> reporting"
    level: str  # "global", "database", "table", "column", "routine" or "proxy"
    database: str  # at database level a LIKE pattern ("_", "%" wildcards, "\\" escapes); "" for global and proxy
    name: str  # the table, the routine or the proxied account; "" otherwise
    privileges: frozenset[str]

    def where(self) -> str:
        if self.level == "global":
            return "*.*"
        if self.level == "proxy":
            return self.name
        if self.level == "database":
            return quote_ident(self.database) + ".*"
        return quote_ident(self.database) + "." + quote_ident(self.name)

    def problems(self) -> list[str]:
        """Return why a grant may not carry these privileges, if it may not."""
        if self.level == "global":
            return [f"{self.holder} holds global privileges ({_names(self.privileges)})"]
        if self.level == "proxy":
            return [f"{self.holder} holds PROXY on {self.name}: {_REFUSED['PROXY']}"]
        found = []
        if self.level == "database":
            system = any(_like(self.database, schema) for schema in _SYSTEM_SCHEMAS)
        else:
            system = self.database.lower() in _SYSTEM_SCHEMAS
        if system:
            found.append(
                f"{self.holder} holds {_names(self.privileges)} on {self.where()}, which covers a system schema"
            )
        found += [
            f"{self.holder} holds {privilege} on {self.where()}: {_REFUSED[privilege]}"
            for privilege in ("GRANT OPTION", "ALTER ROUTINE")
            if privilege in self.privileges
        ]
        return found


def _names(privileges) -> str:
    """List privileges for a message, administrative ones first, at most eight."""
    ordered = sorted(privileges, key=lambda p: (p in DATABASE_PRIVILEGES, p))
    more = len(ordered) - 8
    return ", ".join(ordered[:8]) + (f" and {more} more" if more > 0 else "")


def _like(pattern: str, text: str) -> bool:
    """Whether `text` matches a grant table's database pattern ("%", "_" wildcards, "\\" escapes), ignoring case."""
    regex, chars = [], iter(pattern)
    for char in chars:
        if char == "\\":
            regex.append(re.escape(next(chars, "\\")))
        else:
            regex.append({"%": ".*", "_": "."}.get(char) or re.escape(char))
    return re.fullmatch("".join(regex), text, re.IGNORECASE | re.DOTALL) is not None


def _literal(pattern: str) -> str | None:
    """Return the one database name a pattern matches, or None if it has wildcards."""
    if re.search(r"(?<!\\)(?:\\\\)*[%_]", pattern):
        return None
    return re.sub(r"\\(.)", r"\1", pattern)


def _covers(granted: str, pattern: str) -> bool:
    """Whether a database-level grant on pattern `granted` covers every database `pattern` matches."""
    if granted in (pattern, "%"):
        return True
    literal = _literal(pattern)
    return literal is not None and _like(granted, literal)


def _set_names(value) -> set[str]:
    """Turn a grant table's privilege SET (tables_priv, procs_priv, columns_priv) into privilege names."""
    items = value if isinstance(value, (set, frozenset)) else str(value or "").split(",")
    names = {" ".join(item.split()).upper() for item in items if item.strip()}
    renamed = {"GRANT": "GRANT OPTION", "DELETE VERSIONING ROWS": "DELETE HISTORY"}
    return {renamed.get(name, name) for name in names}


def _column_privilege(column: str) -> str:
    return _PRIV_COLUMNS.get(column) or column.removesuffix("_priv").replace("_", " ").upper()


def _leftover_warnings(held: list[_Held]) -> list[str]:
    """Say what a scope lets a grant user leave behind: code that runs as someone, tables nobody owns."""
    code: dict[str, set[str]] = {}
    tables = set()
    for item in held:
        if item.level not in ("database", "table"):
            continue
        for privilege in item.privileges & CODE_PRIVILEGES.keys():
            code.setdefault(item.where(), set()).add(_CODE_KINDS[privilege])
        if "CREATE" in item.privileges:
            tables.add(item.where())
    warnings = []
    if code:
        listed = "; ".join(f"{', '.join(sorted(kinds))} in {where}" for where, kinds in sorted(code.items()))
        warnings.append(
            f"Grant users of this scope may create {listed}. Triggers, events and SQL SECURITY DEFINER views and"
            " routines run with the grant user's rights, SQL SECURITY INVOKER ones with the rights of whoever uses"
            " them; revocation drops them and lists them in the audit trail and a drift finding. Leave CREATE VIEW,"
            " CREATE ROUTINE, TRIGGER and EVENT out of the profile unless users are meant to create code."
        )
    if tables:
        warnings.append(
            f"Grant users of this scope may create tables in {', '.join(sorted(tables))}: tables have no owner on"
            " MySQL/MariaDB, so they stay after revocation and no audit event lists them."
        )
    return warnings


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
            raise ConnectorError(
                f"Target {self.target.name!r}: user_host {host!r} is not a valid account host.", permanent=True
            )
        return host

    # -- interface ----------------------------------------------------------

    def provision(self, grant: GrantLike) -> Provisioned:
        """Create or update the grant's account with a fresh password and exactly the scope's roles and privileges."""
        user, user_host = self.user_name(grant), self.user_host
        host, port, database = self._endpoint()
        roles, privileges, max_connections = self._parse_scope(grant.scope)
        password = secrets.token_urlsafe(24)

        # A syntax error message quotes the statement, password clause included.
        with self._errors("provision " + user, hide=(password, mysql_native_password_hash(password))):
            conn = self._admin()
            server = self._server(conn)
            with conn.cursor() as cur:
                # Roles change after `catalog plan` looked at them: read them again.
                self._validate_scope(cur, server, roles, privileges)
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
            "username": user,
            "password": password,
            "host": host,
            "port": port,
            "database": database,
            "dsn": dsn,
            "command": command,
        }
        return Provisioned(external_ref=user, credentials=credentials, expires_at=grant.expires_at)

    def extend(self, grant: GrantLike) -> None:
        """Accept a later expiry: nothing on the server holds it, so only check the account is still there."""
        user = self.user_name(grant)
        with self._errors("extend " + user):
            with self._admin().cursor() as cur:
                if not self._account_hosts(cur, user):
                    raise ConnectorError(
                        f"Account {user} does not exist on the target; it cannot be extended.", permanent=True
                    )

    def revoke(self, grant: GrantLike) -> None:
        """Remove the grant's account and what it defined (see `revoke_many`); succeed if already gone."""
        errors = self.revoke_many([grant])
        if errors:
            raise ConnectorError(errors[grant.pk])

    def revoke_many(self, grants: list[GrantLike]) -> dict[int, str]:
        """Remove the grants' accounts, then drop the views, routines, triggers and events they defined.

        Each account is locked, its connections killed, dropped, and looked
        for again. What they defined is dropped afterwards, when no session of
        theirs is left to make more, with one look at the server for the
        batch, and noted in the inventory. Returns {grant pk: error} for the
        grants to retry; succeeds for what is already gone.
        """
        errors, gone = {}, []
        self._read_activity(grants)
        for grant in grants:
            try:
                self._drop_account(grant)
            except ConnectorError as exc:
                if exc.permanent:
                    raise
                errors[grant.pk] = exc.message
            else:
                gone.append(grant)
        if gone:
            try:
                self._drop_defined(gone)
            except ConnectorError as exc:
                if exc.permanent:
                    raise
                errors.update(dict.fromkeys((grant.pk for grant in gone), exc.message))
        return errors

    def _read_activity(self, grants: list[GrantLike]) -> None:
        """Read what performance_schema kept about the grants' accounts into `self.activity`; never raise.

        The server keeps, per account, counts and times by statement kind
        (events_statements_summary_by_account_by_event_name: statement/sql/select,
        .../insert, ...), not statement texts: its digest table is by schema,
        not by account, and its history is by thread, gone with the thread.
        With the sessions open now (the revocation ends them next). One query
        for the batch, and one for the sessions.
        """
        users = {self.user_name(grant): grant.pk for grant in grants}
        if not users:
            return
        source = "performance_schema"
        try:
            with self._admin().cursor() as cur:
                cur.execute(
                    "SELECT USER, HOST, DB, TIME FROM information_schema.PROCESSLIST WHERE USER IN %(u)s",
                    {"u": list(users)},
                )
                seen: dict[str, list[dict]] = {}
                for user, host, db, seconds in cur.fetchall():
                    started = time.time() - int(seconds or 0)
                    seen.setdefault(user, []).append(
                        {
                            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                            "client": host or "",
                            "database": db or "",
                        }
                    )
                cur.execute("SELECT @@performance_schema")
                if not int(cur.fetchone()[0]):
                    why = f"performance_schema is off on target {self.target.name!r} (performance_schema=ON, restart)."
                    for user, pk in users.items():
                        self.activity[pk] = activity.unavailable(source, why, open_sessions=seen.get(user, []))
                    return
                cur.execute(
                    "SELECT USER, EVENT_NAME, SUM(COUNT_STAR), SUM(SUM_TIMER_WAIT) / 1e9,"
                    " SUM(SUM_ROWS_SENT + SUM_ROWS_AFFECTED)"
                    " FROM performance_schema.events_statements_summary_by_account_by_event_name"
                    " WHERE USER IN %(u)s AND COUNT_STAR > 0 GROUP BY USER, EVENT_NAME",
                    {"u": list(users)},
                )
                rows = cur.fetchall()
        except (pymysql.MySQLError, ConnectorError) as exc:
            why = f"reading performance_schema failed: {getattr(exc, 'message', None) or exc}"
            for pk in users.values():
                self.activity[pk] = activity.unavailable(source, why)
            return
        by_user: dict[str, list[dict]] = {}
        for user, event, calls, total_ms, affected in rows:
            by_user.setdefault(user, []).append(
                {"query": event, "calls": int(calls), "rows": int(affected or 0), "total_ms": float(total_ms or 0)}
            )
        for user, pk in users.items():
            mine = by_user.get(user, [])
            totals = {
                "statements": len(mine),
                "calls": sum(r["calls"] for r in mine),
                "rows": sum(r["rows"] for r in mine),
                "total_ms": sum(r["total_ms"] for r in mine),
            }
            self.activity[pk] = activity.statements_digest(
                source,
                mine,
                totals=totals,
                open_sessions=seen.get(user, []),
                note="The server keeps counts by statement kind per account, not statement texts.",
                unit="statement kind",
            )

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
                    warnings.append(
                        f"MySQL {server.version_text} has no roles: only 'privileges' scopes can be provisioned."
                    )
                elif server.mariadb and not self._can_set_default_roles(cur, server):
                    warnings.append(
                        f"Admin account {server.admin} lacks UPDATE on mysql.*, which MariaDB requires for"
                        " SET DEFAULT ROLE ... FOR another account: scopes with 'roles' will fail."
                    )
                unreadable = self._unreadable_grant_tables(cur, server) if server.has_roles else []
                if unreadable:
                    warnings.append(
                        f"Admin account {server.admin} lacks SELECT on {', '.join(unreadable)}: scopes with 'roles'"
                        " will be refused, because what the roles hold cannot be checked."
                    )
                else:
                    warnings += self._everyone_warnings(cur, server)

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

    def validate_scope(self, scope: dict) -> list[str]:
        """Refuse a scope that hands out more than a grant may; return warnings about what it lets users leave behind.

        The scope's roles are followed through the roles granted to them. Each
        may hold privileges on databases and tables only, none on a system
        schema, and no GRANT OPTION, ALTER ROUTINE, PROXY or role WITH ADMIN
        OPTION. Where the scope lets a user create views, routines, triggers
        or events, the admin account must be able to see and drop them at
        revocation, and on MariaDB the scope may have no role (the user could
        make it the code's DEFINER). Raises ConnectorError(permanent=True)
        naming what to fix, a transient one if the server cannot be read.
        """
        roles, privileges, _ = self._parse_scope(scope)
        with self._errors("check the scope"):
            conn = self._admin()
            server = self._server(conn)
            with conn.cursor() as cur:
                return self._validate_scope(cur, server, roles, privileges)

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

    def _parse_scope(self, scope) -> tuple[list[str], list[_PrivilegeGrant], int]:
        if not isinstance(scope, dict):
            raise ConnectorError(
                "Grant scope must be a mapping of roles, privileges and max_user_connections.", permanent=True
            )
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
            raise ConnectorError(
                "Grant scope has neither 'roles' nor 'privileges': the account could do nothing.", permanent=True
            )

        limit = scope.get("max_user_connections", 0)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= 1_000_000:
            raise ConnectorError(
                "Grant scope 'max_user_connections' must be a whole number from 0 (no own limit).", permanent=True
            )
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
        refused = [n for n in names if n in _REFUSED]
        if refused:
            raise ConnectorError(
                f"Privilege {refused[0]} cannot be granted ({on!r}): {_REFUSED[refused[0]]}.", permanent=True
            )
        bad = [n for n in names if n not in allowed]
        if bad:
            level = "db.*" if table is None else "db.table"
            raise ConnectorError(
                f"Privilege(s) {', '.join(repr(n) for n in bad)} cannot be granted on {level} ({on!r});"
                f" allowed: {', '.join(sorted(allowed))}.",
                permanent=True,
            )
        return _PrivilegeGrant(tuple(dict.fromkeys(names)), database, table)

    def _validate_scope(self, cur, server: _Server, roles: list[str], privileges: list[_PrivilegeGrant]) -> list[str]:
        """Refuse what a grant may not hold; require the admin can clean up what it may create; return warnings."""
        held, problems = self._role_privileges(cur, server, roles)
        problems += [problem for item in held for problem in item.problems()]
        if problems:
            raise ConnectorError(
                f"Refusing the scope on target {self.target.name!r}: "
                + "; ".join(problems)
                + ". Fix the access profile or the role.",
                permanent=True,
            )
        held += [item.held() for item in privileges]
        code = sorted(
            {
                privilege
                for item in held
                if item.level in ("database", "table")
                for privilege in item.privileges & CODE_PRIVILEGES.keys()
            }
        )
        if server.mariadb and roles and code:
            # MariaDB lets a user name its current role as the DEFINER of what it
            # creates without SUPER or SET USER (DEFINER = CURRENT_ROLE): revocation
            # cannot tell that code from the role's other objects, and it would go
            # on running with the role's rights after the grant.
            raise ConnectorError(
                f"Refusing the scope on target {self.target.name!r}: it lets users create code ({', '.join(code)})"
                f" while role {roles[0]} is active, and on MariaDB they may make the role that code's DEFINER, which"
                " then outlives the grant with the role's rights. Give code privileges in 'privileges' of a profile"
                " without 'roles', or take them out of the role.",
                permanent=True,
            )
        self._require_cleanup_rights(cur, server, held)
        return _leftover_warnings(held)

    def _role_privileges(self, cur, server: _Server, roles: list[str]) -> tuple[list[_Held], list[str]]:
        """Follow the scope's roles through the roles granted to them; return what each holds, and problems."""
        if not roles:
            return [], []
        if not server.has_roles:
            raise ConnectorError(
                f"Target {self.target.name!r} runs MySQL {server.version_text}, which has no roles.", permanent=True
            )
        if server.mariadb and len(roles) > 1:
            raise ConnectorError(
                "MariaDB activates only one role at login: give the profile one role (a role can be granted others).",
                permanent=True,
            )
        # Roles are accounts: on MariaDB rows of mysql.user with is_role (host
        # ""), on MySQL any account, those we hand out at host "%".
        if server.mariadb:
            names = {u for (u,) in self._read(cur, "mysql.user", "SELECT User FROM mysql.user WHERE is_role = 'Y'")}
            start = [(role, "") for role in roles if role in names]
            rows = self._read(
                cur,
                "mysql.roles_mapping",
                "SELECT User, Host, Role, '', Admin_option FROM mysql.roles_mapping WHERE Host = ''",
            )
        else:
            statement = "SELECT User FROM mysql.user WHERE Host = '%%' AND User IN %s"
            names = {u for (u,) in self._read(cur, "mysql.user", statement, [roles])}
            start = [(role, "%") for role in roles if role in names]
            rows = self._read(
                cur,
                "mysql.role_edges",
                "SELECT TO_USER, TO_HOST, FROM_USER, FROM_HOST, WITH_ADMIN_OPTION FROM mysql.role_edges",
            )
        missing = [role for role in roles if role not in names]
        if missing:
            raise ConnectorError(
                f"Role(s) {', '.join(missing)} do not exist on target {self.target.name!r}; fix the access profile.",
                permanent=True,
            )
        granted: dict[tuple[str, str], list[tuple[tuple[str, str], bool]]] = {}
        for user, host, role, role_host, admin in rows:
            granted.setdefault((user, host), []).append(((role, role_host), admin == "Y"))

        paths = {node: node[0] for node in start}
        queue, problems = list(start), []
        while queue:
            node = queue.pop(0)
            for role, admin in granted.get(node, []):
                label = role[0] if role[1] in ("", "%") else f"{role[0]}@{role[1]}"
                if admin:
                    problems.append(
                        f"{paths[node]} holds role {label} WITH ADMIN OPTION: the user could grant {label} to any"
                        " account, where it outlives the grant"
                    )
                if role not in paths:
                    paths[role] = f"{paths[node]} -> {label}"
                    queue.append(role)
        return self._held(cur, server, paths), problems

    def _held(self, cur, server: _Server, paths: dict[tuple[str, str], str]) -> list[_Held]:
        """Read what the given accounts (user, host) hold at every level from the grant tables."""
        nodes = [list(node) for node in paths]
        # MySQL compares host names without regard to case.
        holders = {(user, host.lower()): path for (user, host), path in paths.items()}
        found: dict[tuple, set[str]] = {}

        def add(user, host, level, database, name, privileges):
            if privileges:
                found.setdefault((holders[(user, host.lower())], level, database, name), set()).update(privileges)

        if server.mariadb and server.version >= (10, 4, 0):
            for user, host, access in self._read(
                cur,
                "mysql.global_priv",
                "SELECT User, Host, CAST(JSON_VALUE(Priv, '$.access') AS UNSIGNED) FROM mysql.global_priv"
                " WHERE (User, Host) IN %s",
                [nodes],
            ):
                access = int(access or 0)
                add(
                    user,
                    host,
                    "global",
                    "",
                    "",
                    {
                        _MARIADB_GLOBAL_BITS[bit] if bit < len(_MARIADB_GLOBAL_BITS) else f"privilege bit {bit}"
                        for bit in range(access.bit_length())
                        if access >> bit & 1
                    },
                )
        else:
            columns = self._priv_columns(cur, "user")
            if columns:
                statement = f"SELECT User, Host, {', '.join(map(quote_ident, columns))} FROM mysql.user"
                statement += " WHERE (User, Host) IN %s"
                for user, host, *flags in self._read(cur, "mysql.user", statement, [nodes]):
                    privileges = {_column_privilege(c) for c, flag in zip(columns, flags) if flag == "Y"}
                    add(user, host, "global", "", "", privileges)
        if not server.mariadb:
            # MySQL 8's dynamic privileges (SYSTEM_VARIABLES_ADMIN, ...) are all global.
            statement = "SELECT USER, HOST, PRIV FROM mysql.global_grants WHERE (USER, HOST) IN %s"
            for user, host, privilege in self._read(cur, "mysql.global_grants", statement, [nodes]):
                add(user, host, "global", "", "", {privilege.replace("_", " ")})
        rows = self._read(cur, "mysql.db", "SELECT * FROM mysql.db WHERE (User, Host) IN %s", [nodes])
        columns = [column[0] for column in cur.description]
        for row in rows:
            record = dict(zip(columns, row))
            privileges = {_column_privilege(c) for c in columns if c.endswith("_priv") and record[c] == "Y"}
            add(record["User"], record["Host"], "database", record["Db"], "", privileges)
        for table, level, statement in _OBJECT_GRANTS:
            for user, host, database, name, privileges in self._read(
                cur, table, statement + " WHERE (User, Host) IN %s", [nodes]
            ):
                add(user, host, level, database, name, _set_names(privileges))
        statement = "SELECT User, Host, Proxied_user, Proxied_host FROM mysql.proxies_priv WHERE (User, Host) IN %s"
        for user, host, proxied, proxied_host in self._read(cur, "mysql.proxies_priv", statement, [nodes]):
            # MariaDB cannot grant PROXY to a role; MySQL's roles are accounts, which can hold it.
            add(user, host, "proxy", "", cur.mogrify("%s@%s", (proxied, proxied_host)), {"PROXY"})
        return [_Held(holder, *rest, frozenset(privileges)) for (holder, *rest), privileges in found.items()]

    def _priv_columns(self, cur, table: str) -> list[str]:
        """Return the privilege columns of mysql.`table` (they differ between servers and versions)."""
        cur.execute(
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'mysql' AND TABLE_NAME = %s"
            " ORDER BY ORDINAL_POSITION",
            [table],
        )
        return [name for (name,) in cur.fetchall() if name.endswith("_priv")]

    def _require_cleanup_rights(self, cur, server: _Server, held: list[_Held]) -> None:
        """Refuse a scope that lets the user create code where the admin could not see and drop it at revocation."""
        wanted = [
            (item, privilege)
            for item in held
            if item.level in ("database", "table")
            for privilege in sorted(item.privileges & CODE_PRIVILEGES.keys())
        ]
        wanted = [(item, code) for item, code in wanted if CODE_PRIVILEGES[code] not in server.privileges]
        if not wanted:
            return
        # An account sees its own rows of these views, whatever else it may read.
        cur.execute(
            "SELECT TABLE_SCHEMA, PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = %s",
            [server.admin],
        )
        on_databases = cur.fetchall()
        cur.execute(
            "SELECT TABLE_SCHEMA, TABLE_NAME, PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES"
            " WHERE GRANTEE = %s",
            [server.admin],
        )
        on_tables = cur.fetchall()
        missing: dict[tuple[str, str], list[str]] = {}
        for item, privilege in wanted:
            need = CODE_PRIVILEGES[privilege]
            pattern = item.database if item.level == "database" else item.database.replace("_", r"\_")
            if any(kind == need and _covers(granted, pattern) for granted, kind in on_databases):
                continue
            if item.level == "table" and (item.database, item.name, need) in on_tables:
                continue
            why = f"{_CODE_KINDS[privilege]} ({privilege}, {item.holder})"
            missing.setdefault((need, item.where()), []).append(why)
        raise_for = "; ".join(
            f"{need} on {where}, which it needs to find and drop the {' and '.join(dict.fromkeys(why))}"
            " that grant users may create there"
            for (need, where), why in missing.items()
        )
        if raise_for:
            raise ConnectorError(
                f"Admin account {server.admin} of target {self.target.name!r} lacks {raise_for}. Grant it that (see"
                " the README's MySQL/MariaDB set-up) or leave those privileges out of the profile.",
                permanent=True,
            )

    def _read(self, cur, table: str, statement: str, args=None) -> list[tuple]:
        """Run a read of a grant table; say which SELECT the admin lacks if it is refused."""
        try:
            cur.execute(statement, args)
        except pymysql.MySQLError as exc:
            if _code(exc) in (1142, 1044):
                raise ConnectorError(
                    f"Admin account {self._server_info.admin if self._server_info else ''} of target"
                    f" {self.target.name!r} lacks SELECT on {table}, which it needs to check what scope roles hold"
                    " (see the README's MySQL/MariaDB set-up).",
                    permanent=True,
                ) from None
            raise
        return list(cur.fetchall())

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
        cur.execute(
            "SELECT FROM_USER, FROM_HOST FROM mysql.role_edges WHERE TO_USER = %s AND TO_HOST = %s", [user, host]
        )
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

    def _drop_account(self, grant: GrantLike) -> None:
        """Lock the grant's account, kill its connections, drop it, check again; succeed if already gone."""
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

    def _drop_defined(self, grants: list[GrantLike]) -> None:
        """Drop every view, routine, trigger and event whose DEFINER is one of the grants' accounts; note each.

        SQL SECURITY INVOKER views and routines go too: they run the grant
        user's code with the rights of whoever uses them, a DBA's included.
        Run after the accounts are gone: meanwhile a trigger whose definer no
        longer exists fails the writes to its table, a moment at most.
        """
        by_user = {self.user_name(grant): grant for grant in grants}
        with self._errors("drop what " + ", ".join(by_user) + " defined"), self._admin().cursor() as cur:
            # Not the system schemas: no scope reaches them (validate_scope), and
            # sys alone has a hundred views the server would open one by one.
            cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
            schemas = [name for (name,) in cur.fetchall() if name.lower() not in _SYSTEM_SCHEMAS]
            found = []
            for statement in _DEFINED if schemas else ():
                cur.execute(statement, {"schemas": schemas, "users": list(by_user)})
                found += cur.fetchall()
            for schema, name, table, kind, definer in found:
                # The server compares names without regard to case; accounts do not.
                grant = by_user.get(definer.split("@", 1)[0])
                if grant is not None:
                    self._drop_object(cur, grant, schema=schema, name=name, table=table, kind=kind)

    def _drop_object(self, cur, grant: GrantLike, *, schema: str, name: str, table: str, kind: str) -> None:
        kinds = {"TRIGGER", "EVENT", "VIEW", "PROCEDURE", "FUNCTION", "PACKAGE BODY", "PACKAGE"}
        statement = f"DROP {kind} IF EXISTS {quote_ident(schema)}.{quote_ident(name)}"
        action = "dropped"
        try:
            if kind not in kinds:
                action = f"reported: not dropped (a {kind} this connector does not know)"
            elif kind.startswith("PACKAGE"):
                # MariaDB parses DROP PACKAGE only in Oracle mode (before 11.4).
                cur.execute("SELECT @@SESSION.sql_mode")
                (mode,) = cur.fetchone()
                cur.execute("SET SESSION sql_mode = 'ORACLE'")
                try:
                    cur.execute(statement)
                finally:
                    cur.execute("SET SESSION sql_mode = %s", [mode])
            else:
                cur.execute(statement)
        except pymysql.MySQLError as exc:
            if _code(exc) not in _DENIED:
                raise
            # The account is gone either way; an admin finds this in the drift finding.
            action = f"reported: not dropped ({self._scrub(exc)})"
        label = f"{name} on {table}" if table else name
        self.note_object(grant.pk, kind=kind.lower(), name=label, action=action, database=schema)

    def _end_sessions(self, cur, user: str) -> int:
        """Kill every connection of `user` and wait for them to leave; return how many are left."""
        deadline = time.monotonic() + KILL_WAIT_S
        while True:
            cur.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s AND ID <> CONNECTION_ID()", [user]
            )
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

    def _grant_tables(self, server: _Server) -> list[str]:
        """Return the grant tables `_role_privileges` reads besides mysql.user."""
        if server.mariadb:
            names = ["mysql.roles_mapping"] + (["mysql.global_priv"] if server.version >= (10, 4, 0) else [])
        else:
            names = ["mysql.role_edges", "mysql.global_grants"]
        return names + ["mysql.db", "mysql.tables_priv", "mysql.columns_priv", "mysql.procs_priv", "mysql.proxies_priv"]

    def _unreadable_grant_tables(self, cur, server: _Server) -> list[str]:
        unreadable = []
        for table in self._grant_tables(server):
            try:
                cur.execute(f"SELECT 1 FROM {table} LIMIT 0")
            except pymysql.MySQLError as exc:
                if _code(exc) not in (1142, 1044):
                    raise
                unreadable.append(table)
        return unreadable

    def _everyone_warnings(self, cur, server: _Server) -> list[str]:
        """Warn about privileges and roles the server gives every account, a grant's whatever its profile says."""
        warnings = []
        if server.mariadb and server.version >= (10, 11, 0):
            held = self._held(cur, server, {("PUBLIC", ""): "PUBLIC"})
            if held:
                listed = "; ".join(f"{_names(item.privileges)} on {item.where()}" for item in held)
                warnings.append(
                    f"PUBLIC holds {listed}: every account, each grant's included, has that whatever its profile"
                    " says (and with a role active, code it creates may name the role its DEFINER). Revoke it from"
                    " PUBLIC and give it through profiles."
                )
                warnings += [f"Through PUBLIC: {warning}" for warning in _leftover_warnings(held)]
        elif not server.mariadb and server.has_roles:
            cur.execute("SELECT @@GLOBAL.mandatory_roles")
            (mandatory,) = cur.fetchone()
            if mandatory:
                warnings.append(
                    f"mandatory_roles is set ({mandatory}): every account, each grant's included, holds those roles"
                    " whatever its profile says."
                )
        return warnings

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
            conn = self.connect_once(
                lambda: pymysql.connect(
                    **params,
                    autocommit=True,
                    charset="utf8mb4",
                    program_name="jitportal",
                    connect_timeout=CONNECT_TIMEOUT_S,
                    read_timeout=READ_TIMEOUT_S,
                    write_timeout=READ_TIMEOUT_S,
                    # Dropping a trigger or view waits for the table's metadata lock:
                    # give up (and retry) before the client's read timeout.
                    init_command=f"SET SESSION lock_wait_timeout = {LOCK_WAIT_S}",
                )
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
                raise ConnectorError(
                    f"Cannot {action} on target {self.target.name!r}{where}: {self._scrub(exc, hide)}"
                ) from None
            raise ConnectorError(
                f"Cannot {action} on target {self.target.name!r}: {self._scrub(exc, hide)}",
                permanent=code in _PERMANENT_ERRORS,
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
