"""The portal's database role: what it may do to the trail, and what the owner gives it after `migrate`.

The triggers refuse UPDATE, DELETE and TRUNCATE from everyone, but the
table's owner may disable them (ALTER TABLE ... DISABLE TRIGGER), the
schema's owner may drop the table, and a superuser may do anything. So in
production the tables belong to an owner role that only `migrate` uses
(MIGRATE_DATABASE_URL), and the portal's role (DATABASE_URL) reads and
writes the other tables but may only SELECT and INSERT the trail.
PostgreSQL only: SQLite (demo mode) has no roles.
"""

from __future__ import annotations

from psycopg import sql

AUDIT_TABLE = "audit_auditevent"
# The portal reads which migrations ran (runserver, showmigrations) but never records one.
READ_ONLY_TABLES = (AUDIT_TABLE, "django_migrations")

_POWERS = """
SELECT current_user, r.rolsuper, r.rolcreaterole,
       pg_has_role(current_user, c.relowner, 'MEMBER'),
       pg_has_role(current_user, n.nspowner, 'MEMBER'),
       has_table_privilege(c.oid, 'UPDATE'),
       has_table_privilege(c.oid, 'DELETE'),
       has_table_privilege(c.oid, 'TRUNCATE'),
       has_table_privilege(c.oid, 'TRIGGER')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, pg_roles r
WHERE c.oid = %s::regclass AND r.rolname = current_user
"""


def audit_table_powers(connection) -> tuple[str, list[str]]:
    """Return the connection's role and what it could do to rewrite or remove the trail (empty: nothing)."""
    with connection.cursor() as cur:
        cur.execute(_POWERS, [AUDIT_TABLE])
        role, superuser, createrole, owns_table, owns_schema, update, delete, truncate, trigger = cur.fetchone()
    if superuser:
        # A superuser passes every privilege check: naming them all says nothing more.
        return role, ["is a superuser (it may skip the triggers and rewrite anything)"]
    powers = []
    if owns_table:
        powers.append(f"owns {AUDIT_TABLE} (or may become its owner), so it may disable the append-only triggers")
    if owns_schema:
        powers.append(f"owns the schema of {AUDIT_TABLE} (or the database, in PostgreSQL 15+), so it may drop it")
    if createrole:
        powers.append("has CREATEROLE, so it may make itself a member of the table's owner")
    granted = [
        name
        for name, allowed in (("UPDATE", update), ("DELETE", delete), ("TRUNCATE", truncate), ("TRIGGER", trigger))
        if allowed
    ]
    if granted and not owns_table:
        powers.append(f"has the {', '.join(granted)} privilege on {AUDIT_TABLE}")
    return role, powers


def grant_portal_privileges(connection, role: str) -> None:
    """As the tables' owner, give `role` what the portal needs: the trail only SELECT and INSERT.

    Runs after every `migrate` with MIGRATE_DATABASE_URL, so tables a new
    release adds are covered too.
    """
    connection.ensure_connection()
    with connection.cursor() as cur:
        cur.execute("SELECT current_schema()")
        names = {"schema": sql.Identifier(cur.fetchone()[0]), "role": sql.Identifier(role)}

        def run(statement, **more):
            cur.execute(sql.SQL(statement).format(**names, **more).as_string(connection.connection))

        run("GRANT USAGE ON SCHEMA {schema} TO {role}")
        run("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}")
        # Identity columns need no sequence privilege; the sequences of older serial columns do.
        run("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}")
        for table in READ_ONLY_TABLES:
            run("REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {t} FROM {role}", t=sql.Identifier(table))
        run("REVOKE INSERT ON {t} FROM {role}", t=sql.Identifier("django_migrations"))
