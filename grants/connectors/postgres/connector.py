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
`owner_role` (receives the tables, sequences, schemas and plain types the
user created, on revoke; code is dropped) and optional `connection_limit`.
A scope role (or owner role) that reaches, through membership, a role with
superuser, CREATEROLE, CREATEDB, BYPASSRLS or REPLICATION, or a built-in role
other than the monitoring ones, is refused (`validate_scope`).

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

from .. import digest as activity
from ..base import Connector, ConnectorError, GrantLike, Provisioned

CONNECT_TIMEOUT_S = 10
# A worker must not hang forever on a lock held on the target.
STATEMENT_TIMEOUT_MS = 60_000
# pg_terminate_backend(pid, timeout) waits up to this long for the backend to exit (PG 14+).
TERMINATE_WAIT_MS = 5_000
SCRAM_ITERATIONS = 4096
# The activity read (pg_stat_statements) is a courtesy to auditors: it must never hold up a revocation.
ACTIVITY_TIMEOUT_MS = 5_000

# Role names are at most 63 bytes; a longer name would be truncated silently
# by the server and no longer match what we look up. Keep room for "g<pk>".
_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")

# -- what a scope may hand out -------------------------------------------------
#
# Membership lets a member SET ROLE to the group and to every role the group
# is a member of, so a scope role is judged by everything it reaches. Role
# attributes (SUPERUSER, CREATEROLE, ...) are not inherited, but SET ROLE
# makes them the member's.
ROLE_ATTRIBUTE_DANGERS = (
    ("rolsuper", "is a superuser"),
    ("rolcreaterole", "has CREATEROLE (it creates roles and grants itself others)"),
    ("rolcreatedb", "has CREATEDB"),
    ("rolbypassrls", "has BYPASSRLS (row-level security does not apply to it)"),
    ("rolreplication", "has REPLICATION (it streams every database's changes)"),
)
# Built-in roles (the server reserves the pg_ prefix) a scope may reach: they
# show statistics and settings and change nothing. pg_read_all_stats shows
# other sessions' query texts, so treat a monitoring profile as sensitive.
HARMLESS_BUILTIN_ROLES = frozenset({"pg_monitor", "pg_read_all_settings", "pg_read_all_stats", "pg_stat_scan_tables"})
# Every other built-in role is refused, including ones newer servers add;
# these say why.
BUILTIN_ROLE_DANGERS = {
    "pg_execute_server_program": "runs programs on the database server as its operating-system user (COPY ... PROGRAM)",
    "pg_read_server_files": "reads any file the database server can read",
    "pg_write_server_files": "writes files on the database server, which is enough to become superuser",
    "pg_read_all_data": (
        "reads every table of every database whatever the GRANTs, pg_authid's password verifiers included"
    ),
    "pg_write_all_data": "writes every table of every database whatever the GRANTs",
    "pg_signal_backend": "cancels and terminates other users' sessions",
    "pg_checkpoint": "runs CHECKPOINT, an administrator's command",
    "pg_maintain": "runs maintenance (REFRESH, REINDEX, ...) on every table with the table owner's rights",
    "pg_create_subscription": "creates subscriptions, which connect from the server to any host",
    "pg_use_reserved_connections": "takes the connection slots reserved for administrators",
    "pg_database_owner": "stands for the owner of the current database and cannot be granted",
}

# Every role each named role reaches through membership (itself included),
# with one path to it. Counted whatever the INHERIT/SET/ADMIN options of the
# memberships (PostgreSQL 16+): ADMIN lets a member grant itself the role.
_REACH_SQL = """
WITH RECURSIVE reach(start, oid, path) AS (
    SELECT r.rolname::text, r.oid, ARRAY[r.rolname::text] FROM pg_roles r WHERE r.rolname = ANY(%s)
  UNION
    SELECT reach.start, m.roleid, reach.path || g.rolname::text
    FROM reach JOIN pg_auth_members m ON m.member = reach.oid JOIN pg_roles g ON g.oid = m.roleid
    WHERE g.rolname::text <> ALL(reach.path)
)
SELECT reach.start, reach.path, g.rolname::text,
       g.rolsuper, g.rolcreaterole, g.rolcreatedb, g.rolbypassrls, g.rolreplication
FROM reach JOIN pg_roles g ON g.oid = reach.oid
"""

# -- what a grant role did ----------------------------------------------------------
#
# pg_stat_statements keeps one row per (userid, dbid, queryid) for the whole
# cluster, whichever database the view is read in. One read per batch, before
# DROP ROLE: each role's top statements by total time, and totals over all of
# its rows (window sums, so only the top rows cross the wire).
_STATEMENTS_SQL = """
SELECT userid, datname, query, calls, rows, total_ms, n, all_calls, all_rows, all_ms FROM (
    SELECT s.userid, d.datname::text AS datname, s.query, s.calls, s.rows, s.total_exec_time AS total_ms,
           row_number() OVER (PARTITION BY s.userid ORDER BY s.total_exec_time DESC, s.queryid) AS rank,
           count(*) OVER p AS n, sum(s.calls) OVER p AS all_calls, sum(s.rows) OVER p AS all_rows,
           sum(s.total_exec_time) OVER p AS all_ms
    FROM pg_stat_statements s LEFT JOIN pg_database d ON d.oid = s.dbid
    WHERE s.userid = ANY(%(oids)s)
    WINDOW p AS (PARTITION BY s.userid)
) t WHERE rank <= %(top)s
ORDER BY userid, rank
"""
# What the view shows a reader without pg_read_all_stats in place of another role's statement text.
_HIDDEN_TEXT = "<insufficient privilege>"

# -- what a grant role made ------------------------------------------------------
#
# Revocation reads these in each database where pg_shdepend shows the role.
# `keep_as` names the data objects that are handed to the owner role; all
# else the role owns is code or definitions and is dropped.
_OWNED_SQL = """
SELECT o.type, o.schema, o.name, o.identity,
       CASE WHEN s.classid = 'pg_class'::regclass AND c.relkind IN ('r', 'p') THEN 'TABLE'
            WHEN s.classid = 'pg_class'::regclass AND c.relkind = 'S' THEN 'SEQUENCE'
            WHEN s.classid = 'pg_type'::regclass AND t.typtype IN ('e', 'c', 'd') THEN 'TYPE'
            WHEN s.classid = 'pg_namespace'::regclass THEN 'SCHEMA' END AS keep_as
FROM pg_shdepend s
CROSS JOIN LATERAL pg_identify_object(s.classid, s.objid, s.objsubid) o
LEFT JOIN pg_class c ON s.classid = 'pg_class'::regclass AND c.oid = s.objid
LEFT JOIN pg_type t ON s.classid = 'pg_type'::regclass AND t.oid = s.objid
WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = %(role)s AND s.deptype = 'o'
  AND s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY o.type, o.identity
"""

# Privileges the role granted to others (grantor = the role), on what it owns
# and on what it holds a grant option of. On what it owns they would pass to
# the new owner with the object, so they are revoked first; on the others,
# DROP OWNED takes them back with the role's grant option (CASCADE: the role
# is in no group by then, so it holds the option nowhere else).
_GRANTED_SQL = """
WITH deps AS (
    SELECT classid, objid, bool_or(deptype = 'o') AS owned FROM pg_shdepend
    WHERE refclassid = 'pg_authid'::regclass AND refobjid = %(role)s AND deptype IN ('o', 'a')
      AND (dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) OR (%(shared)s AND dbid = 0))
    GROUP BY 1, 2
), acls(classid, objid, acl) AS (
    SELECT d.classid, d.objid, c.relacl FROM deps d
        JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
    UNION ALL SELECT d.classid, d.objid, a.attacl FROM deps d
        JOIN pg_attribute a ON d.classid = 'pg_class'::regclass AND a.attrelid = d.objid
                            AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL SELECT d.classid, d.objid, p.proacl FROM deps d
        JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
    UNION ALL SELECT d.classid, d.objid, n.nspacl FROM deps d
        JOIN pg_namespace n ON d.classid = 'pg_namespace'::regclass AND n.oid = d.objid
    UNION ALL SELECT d.classid, d.objid, t.typacl FROM deps d
        JOIN pg_type t ON d.classid = 'pg_type'::regclass AND t.oid = d.objid
    UNION ALL SELECT d.classid, d.objid, l.lomacl FROM deps d
        JOIN pg_largeobject_metadata l ON d.classid = 'pg_largeobject'::regclass AND l.oid = d.objid
    UNION ALL SELECT d.classid, d.objid, f.srvacl FROM deps d
        JOIN pg_foreign_server f ON d.classid = 'pg_foreign_server'::regclass AND f.oid = d.objid
    UNION ALL SELECT d.classid, d.objid, w.fdwacl FROM deps d
        JOIN pg_foreign_data_wrapper w ON d.classid = 'pg_foreign_data_wrapper'::regclass AND w.oid = d.objid
    UNION ALL SELECT d.classid, d.objid, g.lanacl FROM deps d
        JOIN pg_language g ON d.classid = 'pg_language'::regclass AND g.oid = d.objid
    UNION ALL SELECT d.classid, d.objid, b.datacl FROM deps d
        JOIN pg_database b ON d.classid = 'pg_database'::regclass AND b.oid = d.objid
    UNION ALL SELECT d.classid, d.objid, s.spcacl FROM deps d
        JOIN pg_tablespace s ON d.classid = 'pg_tablespace'::regclass AND s.oid = d.objid
)
SELECT a.classid::regclass::text, a.objid, c.relkind::text, o.type, o.schema, o.name, o.identity,
       coalesce(g.rolname::text, 'PUBLIC'), array_agg(DISTINCT e.privilege_type ORDER BY e.privilege_type), d.owned
FROM acls a
JOIN deps d USING (classid, objid)
CROSS JOIN LATERAL aclexplode(a.acl) e
CROSS JOIN LATERAL pg_identify_object(a.classid, a.objid, 0) o
LEFT JOIN pg_class c ON a.classid = 'pg_class'::regclass AND c.oid = a.objid
LEFT JOIN pg_roles g ON g.oid = e.grantee
WHERE e.grantor = %(role)s AND e.grantee <> %(role)s
  -- What every role has by default (EXECUTE on functions, USAGE on types and
  -- languages, CONNECT and TEMP on databases) is not something the role gave.
  AND NOT (e.grantee = 0 AND (a.classid, e.privilege_type) IN (
      ('pg_proc'::regclass, 'EXECUTE'), ('pg_type'::regclass, 'USAGE'), ('pg_language'::regclass, 'USAGE'),
      ('pg_database'::regclass, 'CONNECT'), ('pg_database'::regclass, 'TEMPORARY')))
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 10
ORDER BY 7, 8
"""

# Code attached to tables: on the tables the role owns and that are handed
# over (triggers and rules run with the table owner's rights, policies decide
# who sees rows), and triggers anywhere that run one of the role's functions
# (the function goes; its trigger cannot stay). Clones of a partitioned
# table's trigger go with it.
_ATTACHED_SQL = """
SELECT 'trigger', t.tgname::text, n.nspname::text, c.relname::text
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_proc p ON p.oid = t.tgfoid
WHERE NOT t.tgisinternal AND t.tgparentid = 0
  AND ((%(keep)s AND c.relowner = %(role)s AND c.relkind IN ('r', 'p'))
       OR (p.proowner = %(role)s AND c.relowner <> %(role)s))
UNION ALL
SELECT 'rule', r.rulename::text, n.nspname::text, c.relname::text
FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE %(keep)s AND c.relowner = %(role)s AND c.relkind IN ('r', 'p') AND r.rulename <> '_RETURN'
UNION ALL
SELECT 'policy', p.polname::text, n.nspname::text, c.relname::text
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE %(keep)s AND c.relowner = %(role)s AND c.relkind IN ('r', 'p')
ORDER BY 1, 3, 4, 2
"""
# The keyword that names an object of a catalog in GRANT/REVOKE.
_PRIVILEGE_OBJECT_KEYWORDS = {
    "pg_class": "TABLE",
    "pg_proc": "ROUTINE",
    "pg_namespace": "SCHEMA",
    "pg_type": "TYPE",
    "pg_largeobject": "LARGE OBJECT",
    "pg_foreign_server": "FOREIGN SERVER",
    "pg_foreign_data_wrapper": "FOREIGN DATA WRAPPER",
    "pg_language": "LANGUAGE",
    "pg_database": "DATABASE",
    "pg_tablespace": "TABLESPACE",
}
_PRIVILEGES = frozenset(
    {
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "TRUNCATE",
        "REFERENCES",
        "TRIGGER",
        "EXECUTE",
        "USAGE",
        "CREATE",
        "CONNECT",
        "TEMPORARY",
        "MAINTAIN",
    }
)


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
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731 (a one-line helper for the three values below)
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
        # Where pg_stat_statements can be read: None (the admin connection), else the target's database.
        self._statements_db: str | None = None

    # -- naming -------------------------------------------------------------

    def role_name(self, grant: GrantLike) -> str:
        return self.account_name(grant)

    # -- interface ----------------------------------------------------------

    def provision(self, grant: GrantLike) -> Provisioned:
        """Create or update the grant's role with a fresh password and exactly the scope's memberships."""
        role = self.role_name(grant)
        host, port, dbname = self._endpoint()
        wanted = self._scope_roles(grant.scope)
        limit = self._connection_limit(grant.scope)
        expires_at = grant.expires_at
        if expires_at.tzinfo is None:
            raise ValueError("grant.expires_at must be timezone-aware")
        valid_until = expires_at.astimezone(datetime.UTC).isoformat()
        password = secrets.token_urlsafe(24)

        with self._errors("provision " + role):
            conn = self._admin()
            with conn.transaction():
                # Two workers provisioning the same grant would race on CREATE ROLE.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [role])
                # Read again here, not only at `catalog plan`: roles on the target change.
                self._check_scope(conn, grant.scope)
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
        valid_until = grant.expires_at.astimezone(datetime.UTC).isoformat()
        with self._errors("extend " + role):
            conn = self._admin()
            if not self._role_oid(conn, role):
                raise ConnectorError(
                    f"Role {role} does not exist on the target; it cannot be extended.", permanent=True
                )
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
            oids = dict(
                conn.execute(
                    "SELECT rolname::text, oid FROM pg_roles WHERE rolname = ANY(%s)", [list(roles)]
                ).fetchall()
            )
            if not oids:
                return errors
            members = conn.execute(
                "SELECT r.rolname::text, g.rolname::text FROM pg_auth_members m"
                " JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member"
                " WHERE m.member = ANY(%s)",
                [list(oids.values())],
            ).fetchall()
            statements = [sql.SQL("ALTER ROLE {} WITH NOLOGIN PASSWORD NULL").format(sql.Identifier(r)) for r in oids]
            statements += [
                sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(g), sql.Identifier(r)) for r, g in members
            ]
            with conn.transaction():
                # No parameters: psycopg sends the statements as one simple query.
                conn.execute(sql.SQL("; ").join(statements))
            seen = self._open_sessions(conn, list(oids.values()))
            self._terminate_sessions(conn, list(oids.values()))

            by_oid = {oid: name for name, oid in oids.items()}
            # pg_shdepend rows with dbid 0 are shared objects (databases,
            # tablespaces); DROP OWNED run in any database clears those, so
            # the admin database stands in for them. Most roles own nothing:
            # this one query is all they cost.
            deps = conn.execute(
                "SELECT DISTINCT s.refobjid, coalesce(d.datname, current_database()), s.dbid = 0 FROM pg_shdepend s"
                " LEFT JOIN pg_database d ON d.oid = s.dbid"
                " WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = ANY(%s) ORDER BY 1, 2",
                [list(oids.values())],
            ).fetchall()
            places: dict[tuple[str, str], bool] = {}
            for oid, dbname, shared in deps:
                places[by_oid[oid], dbname] = places.get((by_oid[oid], dbname), False) or shared
            unclean = self._missing_owner_roles(conn, [roles[role] for role in {role for role, _ in places}], errors)
            for (role, dbname), shared in places.items():
                grant = roles[role]
                if role in unclean:
                    continue
                try:
                    self._clean_owned(dbname, role, oids[role], grant.pk, self._owner_role(grant.scope), shared=shared)
                except psycopg.Error as exc:
                    # The role keeps what it had here (it can no longer log in and
                    # is in no group); nothing was handed over. Retried later.
                    unclean.add(role)
                    errors[grant.pk] = (
                        f"Cannot clean up what {role} made or granted in database {dbname!r}: {self._scrub(exc)}"
                        f"{self._detail(exc)} Change or drop what depends on it; revocation retries."
                    )

            # A session that was authenticating when NOLOGIN committed may have slipped in.
            self._terminate_sessions(conn, list(oids.values()))
            left = dict(
                conn.execute(
                    "SELECT usesysid, count(*) FROM pg_stat_activity WHERE usesysid = ANY(%s) GROUP BY 1",
                    [list(oids.values())],
                ).fetchall()
            )
            droppable = []
            for name, oid in oids.items():
                if name in unclean:
                    continue
                if not left.get(oid):
                    droppable.append(name)
            # Before DROP ROLE: the statistics stay, but nothing would name the role any more.
            self._read_activity(conn, {oids[name]: roles[name].pk for name in droppable}, seen)
            droppable = []
            for name, oid in oids.items():
                if name in unclean:
                    continue
                if left.get(oid):
                    # Dropping now would orphan the sessions: PostgreSQL lets them run on
                    # with no role name, and we could no longer find them. Retry later.
                    errors[roles[name].pk] = f"{left[oid]} session(s) of {name} did not end; will retry."
                else:
                    droppable.append(name)
            if droppable:
                try:
                    conn.execute(
                        sql.SQL("DROP ROLE IF EXISTS {}").format(sql.SQL(", ").join(map(sql.Identifier, droppable)))
                    )
                except psycopg.Error:
                    # One role that cannot go fails the statement: drop them one by one.
                    for name in droppable:
                        try:
                            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
                        except psycopg.Error as exc:
                            errors[roles[name].pk] = f"Cannot drop {name}: {self._scrub(exc)}"
        return errors

    def _open_sessions(self, conn: psycopg.Connection, oids: list[int]) -> dict[int, list[dict]]:
        """Return the roles' sessions revocation is about to end, by role oid ({} if they cannot be read)."""
        try:
            rows = conn.execute(
                "SELECT usesysid, backend_start, host(client_addr), datname::text, application_name"
                " FROM pg_stat_activity WHERE usesysid = ANY(%s) AND pid <> pg_backend_pid() ORDER BY backend_start",
                [oids],
            ).fetchall()
        except psycopg.Error:
            return {}
        seen: dict[int, list[dict]] = {}
        for oid, started, client, database, application in rows:
            seen.setdefault(oid, []).append(
                {
                    "started_at": started.isoformat() if started else "",
                    "client": client or "local socket",
                    "database": database or "",
                    "source": application or "",
                }
            )
        return seen

    def _read_activity(self, conn: psycopg.Connection, grants_by_oid: dict[int, int], seen: dict) -> None:
        """Read pg_stat_statements for the roles about to be dropped (one query) into `self.activity`.

        Never raises: a failed read gives each grant an "unavailable: why"
        digest (with the sessions revocation saw) and the revocation goes on.
        """
        if not grants_by_oid:
            return
        try:
            rows = self._statement_rows(conn, list(grants_by_oid))
        except psycopg.Error as exc:
            why = self._activity_unavailable(exc)
            for oid, pk in grants_by_oid.items():
                self.activity[pk] = activity.unavailable("pg_stat_statements", why, open_sessions=seen.get(oid, []))
            return
        by_oid: dict[int, list] = {}
        for row in rows:
            by_oid.setdefault(row[0], []).append(row)
        for oid, pk in grants_by_oid.items():
            mine = by_oid.get(oid, [])
            first = mine[0] if mine else None
            totals = {
                "statements": first[6] if first else 0,
                "calls": first[7] if first else 0,
                "rows": first[8] if first else 0,
                "total_ms": first[9] if first else 0,
            }
            statements = [
                {"database": r[1], "query": r[2], "calls": r[3], "rows": r[4], "total_ms": r[5]} for r in mine
            ]
            hidden = any(r[2] == _HIDDEN_TEXT for r in mine)
            note = "The admin role lacks pg_read_all_stats: statement texts are hidden." if hidden else ""
            self.activity[pk] = activity.statements_digest(
                "pg_stat_statements", statements, totals=totals, open_sessions=seen.get(oid, []), note=note
            )

    def _statement_rows(self, conn: psycopg.Connection, oids: list[int]) -> list[tuple]:
        params = {"oids": oids, "top": activity.MAX_STATEMENTS}
        if self._statements_db is None:
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(ACTIVITY_TIMEOUT_MS)))
                    return conn.execute(_STATEMENTS_SQL, params).fetchall()
            except psycopg.errors.UndefinedTable:
                # The extension lives in the target's database, not the admin DSN's: read it there.
                self._statements_db = self._endpoint()[2]
        with self._connect(self._statements_db) as other, other.transaction():
            other.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(ACTIVITY_TIMEOUT_MS)))
            return other.execute(_STATEMENTS_SQL, params).fetchall()

    def _activity_unavailable(self, exc: psycopg.Error) -> str:
        if isinstance(exc, psycopg.errors.UndefinedTable):
            return (
                f"pg_stat_statements is not installed in database {self._endpoint()[2]!r} of target"
                f" {self.target.name!r} (CREATE EXTENSION pg_stat_statements)."
            )
        if isinstance(exc, psycopg.errors.ObjectNotInPrerequisiteState):
            return f"pg_stat_statements is not in shared_preload_libraries on target {self.target.name!r}."
        return f"reading pg_stat_statements failed: {self._scrub(exc)}"

    def _activity_warnings(self, conn: psycopg.Connection) -> list[str]:
        """Say (a warning, not a failure) when revocation cannot read what grant users ran."""
        try:
            self._statement_rows(conn, [])
        except psycopg.Error as exc:
            return [
                "No activity digest at revocation: "
                + self._activity_unavailable(exc)
                + " Load it (shared_preload_libraries = 'pg_stat_statements', restart) and create the extension"
                " to keep what each grant ran."
            ]
        return []

    def is_present(self, grant: GrantLike) -> bool:
        """Read the target again: does the grant's role or any session of it still exist?"""
        return grant.pk in self.present_many([grant])

    def present_many(self, grants: list[GrantLike]) -> set[int]:
        """Read the target again; return the pks of the grants whose role or a session still exists."""
        roles = {self.role_name(g): g.pk for g in grants}
        if not roles:
            return set()
        with self._errors("inspect " + ", ".join(roles)):
            rows = (
                self._admin()
                .execute(
                    "SELECT rolname::text FROM pg_roles WHERE rolname = ANY(%(r)s)"
                    " UNION SELECT usename::text FROM pg_stat_activity WHERE usename = ANY(%(r)s)",
                    {"r": list(roles)},
                )
                .fetchall()
            )
        return {roles[name] for (name,) in rows}

    def list_managed(self) -> set[str]:
        """Return the names of the roles on the target that look like ours (prefix + "g" + digits)."""
        base = self.prefix + "g"
        with self._errors("list roles"):
            rows = (
                self._admin()
                .execute(r"SELECT rolname FROM pg_roles WHERE rolname LIKE %s ESCAPE '\'", [_like_escape(base) + "%"])
                .fetchall()
            )
        # The reconciler drops what we return: never include a hand-made role
        # such as "jit_gadmin" that merely shares the prefix.
        pattern = re.compile(re.escape(base) + r"[0-9]+")
        return {name for (name,) in rows if pattern.fullmatch(name)}

    def check(self) -> list[str]:
        """Connect and verify the admin role; return warnings about pg_hba.conf lines that defeat expiry
        and about schemas where every grant user may create objects."""
        with self._errors("check"):
            conn = self._admin()
            user, can_create, version = conn.execute(
                "SELECT current_user, rolsuper OR rolcreaterole, current_setting('server_version_num')::int"
                " FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            if not can_create:
                raise ConnectorError(
                    f"Admin role {user!r} of target {self.target.name!r} lacks CREATEROLE.", permanent=True
                )
            if version < 140000:
                # pg_terminate_backend(pid, timeout) appeared in PostgreSQL 14.
                raise ConnectorError(
                    f"Target {self.target.name!r} runs PostgreSQL {version}; 14 or later is required.", permanent=True
                )
            try:
                rules = conn.execute(
                    "SELECT line_number, type, database, user_name, auth_method, error FROM pg_hba_file_rules"
                ).fetchall()
            except psycopg.errors.InsufficientPrivilege:
                warnings = [
                    f"Could not read pg_hba_file_rules as {user!r}: cannot check that no trust line bypasses "
                    "password expiry."
                ]
            else:
                warnings = self._hba_warnings(rules)
            warnings += self._activity_warnings(conn)
        return warnings + self._create_warnings()

    def validate_scope(self, scope: dict) -> list[str]:
        """Read the target; refuse scope roles (and the owner role)
        that are missing or reach superuser or admin roles."""
        with self._errors("check the scope"):
            self._check_scope(self._admin(), scope)
        return []

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

    def _scope_roles(self, scope: dict) -> list[str]:
        roles = scope.get("roles") or []
        if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
            raise ConnectorError("Grant scope 'roles' must be a list of role names.", permanent=True)
        return roles

    def _owner_role(self, scope: dict) -> str | None:
        owner_role = scope.get("owner_role")
        if owner_role in (None, ""):
            return None
        if not isinstance(owner_role, str):
            raise ConnectorError("Grant scope 'owner_role' must be a role name.", permanent=True)
        return owner_role

    def _connection_limit(self, scope: dict) -> int:
        limit = scope.get("connection_limit", -1)
        try:
            if isinstance(limit, bool) or int(limit) < -1:
                raise ValueError(limit)
        except (TypeError, ValueError):
            raise ConnectorError(
                f"Grant scope 'connection_limit' must be a whole number, -1 for no limit (got {limit!r}).",
                permanent=True,
            ) from None
        return int(limit)

    def _check_scope(self, conn: psycopg.Connection, scope: dict) -> None:
        """Refuse a scope whose roles are missing or reach more than a grant may hand out (see the DANGERS above)."""
        roles = self._scope_roles(scope)
        owner_role = self._owner_role(scope)
        self._connection_limit(scope)
        named = roles + ([owner_role] if owner_role and owner_role not in roles else [])
        reached: dict[tuple[str, str], list[str]] = {}
        attributes: dict[str, tuple[bool, ...]] = {}
        for start, path, name, *flags in conn.execute(_REACH_SQL, [named]).fetchall():
            if (start, name) not in reached or len(path) < len(reached[start, name]):
                reached[start, name] = path
            attributes[name] = tuple(flags)
        missing = [r for r in named if (r, r) not in reached]
        if missing:
            raise ConnectorError(
                f"Role(s) {', '.join(missing)} do not exist on target {self.target.name!r}; fix the access profile.",
                permanent=True,
            )
        problems = []
        own = re.compile(re.escape(self.prefix + "g") + r"[0-9]+")
        for (start, name), path in sorted(reached.items()):
            dangers = [why for (_, why), flag in zip(ROLE_ATTRIBUTE_DANGERS, attributes[name]) if flag]
            if own.fullmatch(name):
                dangers.append("is another grant's account, which revocation drops")
            if name.startswith("pg_") and name not in HARMLESS_BUILTIN_ROLES:
                dangers.append(BUILTIN_ROLE_DANGERS.get(name, "is a built-in administrative role"))
            if not dangers:
                continue
            what = "owner role" if start == owner_role and start not in roles else "scope role"
            via = "" if name == start else f" reaches {name} through membership ({' -> '.join(path)}), which"
            problems.append(f"{what} {start}{via} {' and '.join(dangers)}")
        if problems:
            raise ConnectorError(
                f"Refusing the scope on target {self.target.name!r}: {'; '.join(problems)}."
                " A grant may hand out none of these; fix the access profile or the role's memberships on the target.",
                permanent=True,
            )

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
            "SELECT pg_terminate_backend(pid, %s) FROM pg_stat_activity WHERE usesysid = ANY(%s) AND pid <> "
            "pg_backend_pid()",
            [TERMINATE_WAIT_MS, oids],
        )

    def _missing_owner_roles(self, conn: psycopg.Connection, grants, errors: dict[int, str]) -> set[str]:
        """Return the roles of grants whose owner role is gone from the target, with an error for each."""
        wanted = sorted({self._owner_role(grant.scope) for grant in grants} - {None})
        if not wanted:
            return set()
        rows = conn.execute("SELECT rolname::text FROM pg_roles WHERE rolname = ANY(%s)", [wanted]).fetchall()
        existing = {name for (name,) in rows}
        missing = set()
        for grant in grants:
            owner_role = self._owner_role(grant.scope)
            if owner_role and owner_role not in existing:
                # Dropping instead would destroy the data the profile means to keep.
                role = self.role_name(grant)
                missing.add(role)
                errors[grant.pk] = (
                    f"Owner role {owner_role!r} does not exist on target {self.target.name!r}: {role} keeps its objects"
                    " (it can no longer log in and is in no group). Create the role; revocation retries."
                )
        return missing

    def _clean_owned(
        self, dbname: str, role: str, role_oid: int, grant_pk: int, owner_role: str | None, *, shared: bool
    ) -> None:
        """Remove what the role made or granted in one database, in one transaction, and note each object found.

        Privileges it granted to others are revoked; triggers, rules and
        policies on its tables, and triggers elsewhere that run its
        functions, are dropped; with an owner role its tables, sequences,
        schemas and plain types (enums, composite types, domains: a kept
        table may use them, and they run no code) are handed over; then
        DROP OWNED drops everything else (functions, procedures, views,
        materialised views, large objects, publications, default privileges,
        ...) and takes away its own privileges. Code is never handed to
        another role: a SECURITY DEFINER function or a view would run with
        the new owner's rights. DROP OWNED does not cascade: if an object of
        another role depends on one of the role's, the transaction fails and
        the role keeps everything.
        """
        ident = sql.Identifier(role)
        params = {"role": role_oid, "keep": bool(owner_role), "shared": shared}
        notes = []
        # REASSIGN/DROP OWNED only see the current database: connect to each one.
        with self._connect(dbname) as conn, conn.transaction():
            owned = conn.execute(_OWNED_SQL, params).fetchall()
            granted = conn.execute(_GRANTED_SQL, params).fetchall()
            attached = conn.execute(_ATTACHED_SQL, params).fetchall()

            for catalog, objid, relkind, kind, schema, name, identity, grantee, privileges, its_own in granted:
                privileges = [p for p in privileges if p in _PRIVILEGES]
                target = self._privilege_object(catalog, objid, relkind, schema, name, identity)
                if its_own and target is not None and privileges:
                    # A superuser's REVOKE acts as the object's owner: it takes
                    # back what the role granted (CASCADE: and what others
                    # passed on from it). Not SET ROLE to the role: it may no
                    # longer have USAGE on the schema, which REVOKE would need.
                    who = sql.SQL("PUBLIC") if grantee == "PUBLIC" else sql.Identifier(grantee)
                    conn.execute(
                        sql.SQL("REVOKE {} ON {} FROM {} CASCADE").format(
                            sql.SQL(", ").join(map(sql.SQL, privileges)), target, who
                        )
                    )
                notes.append(("privilege", f"{', '.join(privileges)} on {kind} {identity} to {grantee}", "revoked"))

            for kind, name, schema, table in attached:
                conn.execute(
                    sql.SQL("DROP {} {} ON {}").format(
                        sql.SQL(kind.upper()), sql.Identifier(name), sql.Identifier(schema, table)
                    )
                )
                notes.append((kind, f"{name} on {schema}.{table}", "dropped"))

            kept = [row for row in owned if owner_role and row[4]]
            # Schemas and types before the tables that use them; a serial or
            # identity sequence follows its table, and is then already handed over.
            order = {"SCHEMA": 0, "TYPE": 1, "TABLE": 2, "SEQUENCE": 3}
            for _kind, schema, name, _identity, keep_as in sorted(kept, key=lambda row: order[row[4]]):
                target = sql.Identifier(name) if keep_as == "SCHEMA" else sql.Identifier(schema, name)
                new_owner = sql.Identifier(owner_role)
                conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(keep_as), target, new_owner))
            for kind, _schema, _name, identity, keep_as in owned:
                notes.append((kind, identity, f"reassigned to {owner_role}" if owner_role and keep_as else "dropped"))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        for kind, name, action in notes:
            self.note_object(grant_pk, kind=kind, name=name, action=action, database=dbname)

    @staticmethod
    def _privilege_object(catalog, objid, relkind, schema, name, identity) -> sql.Composable | None:
        """Return how GRANT/REVOKE names an object (e.g. `TABLE "public"."t"`), or None for a catalog we do not know."""
        keyword = _PRIVILEGE_OBJECT_KEYWORDS.get(catalog)
        if keyword is None:
            return None
        if catalog == "pg_class":
            keyword = "SEQUENCE" if relkind == "S" else "TABLE"
            target = sql.Identifier(schema, name)
        elif catalog == "pg_type":
            target = sql.Identifier(schema, name)
        elif catalog == "pg_proc":
            # A routine is named with its argument types; pg_identify_object
            # gives that signature already quoted by the server.
            target = sql.SQL(identity)
        elif catalog == "pg_largeobject":
            target = sql.SQL(str(int(objid)))
        else:
            target = sql.Identifier(name)
        return sql.SQL(keyword + " ") + target

    @staticmethod
    def _detail(exc: psycopg.Error) -> str:
        detail = getattr(getattr(exc, "diag", None), "message_detail", None)
        return f" ({' '.join(detail.split())})." if detail else "."

    def _create_warnings(self) -> list[str]:
        """Warn where PUBLIC may create objects in the target's database: then every grant user may.

        What a profile means its users to create is what its group roles may
        create (e.g. app_readwrite: CREATE on schema public); PUBLIC's CREATE
        gives it to read-only users too. Revocation drops what they made, but
        nobody meant them to make it. TEMP is not warned about: temporary
        objects go when the session ends, and revocation ends the sessions.
        """
        dbname = self._endpoint()[2]
        try:
            with self._connect(dbname) as conn:
                schemas = conn.execute(
                    "SELECT nspname::text FROM pg_namespace WHERE has_schema_privilege('public', oid, 'CREATE')"
                    " AND left(nspname, 3) <> 'pg_' AND nspname <> 'information_schema' ORDER BY 1"
                ).fetchall()
                database = conn.execute(
                    "SELECT has_database_privilege('public', current_database(), 'CREATE')"
                ).fetchone()[0]
        except psycopg.Error as exc:
            return [f"Could not read database {dbname!r} to check where grant users may create: {self._scrub(exc)}"]
        warnings = [
            f"PUBLIC has CREATE on schema {name} of database {dbname}: every grant user, read-only ones included,"
            f" can create functions and views there. Run REVOKE CREATE ON SCHEMA {name} FROM PUBLIC and grant CREATE"
            " to the group roles meant to create."
            for (name,) in schemas
        ]
        if database:
            warnings.append(
                f"PUBLIC has CREATE on database {dbname}: every grant user can create schemas there."
                f" Run REVOKE CREATE ON DATABASE {dbname} FROM PUBLIC."
            )
        return warnings

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
            self._conn = self.connect_once(lambda: self._connect(None))
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
                raise ConnectorError(
                    f"The admin DSN of target {self.target.name!r} is malformed.", permanent=True
                ) from None
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
