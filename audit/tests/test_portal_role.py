"""The portal runs as a role that does not own the trail: it may read and append, and nothing else.

On the machine's PostgreSQL, in a database of its own, with an owner role
that runs `migrate` (MIGRATE_DATABASE_URL) and a portal role (DATABASE_URL),
both made for this test and dropped after it.
"""

import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

pytestmark = pytest.mark.postgres_only("roles, grants and table ownership are PostgreSQL's")

BASE = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server():
    """The machine's PostgreSQL, as DATABASE_URL reaches it, and the superuser's connection URL."""
    parts = urlsplit(os.environ.get("DATABASE_URL", ""))
    if parts.scheme not in ("postgres", "postgresql"):
        pytest.fail("These tests need DATABASE_URL on PostgreSQL (make test sets it).")
    return parts


def url(server, user, db):
    host = server.hostname or "127.0.0.1"
    return urlunsplit(("postgres", f"{user}@{host}:{server.port or 5432}", f"/{db}", "", ""))


@pytest.fixture(scope="module")
def deployment(server):
    """A fresh database owned by a fresh owner role, migrated by it, and a portal role; all dropped afterwards."""
    suffix = uuid.uuid4().hex[:10]
    owner, portal, db = f"jit_owner_{suffix}", f"jit_portal_{suffix}", f"jitportal_roles_{suffix}"
    admin = urlunsplit(server._replace(scheme="postgresql", path="/postgres", query=""))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(owner)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(portal)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(owner)))
    try:
        env = {"DATABASE_URL": url(server, portal, db), "MIGRATE_DATABASE_URL": url(server, owner, db)}
        migrated = manage("migrate", "--noinput", **env)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        yield {"owner": owner, "portal": portal, "db": db, "server": server, "migrated": migrated.stdout}
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            for role in (portal, owner):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def manage(*args, **env):
    ours = ("DATABASE_URL", "MIGRATE_DATABASE_URL", "AUDIT_")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def connect(deployment, who):
    dsn = url(deployment["server"], deployment[who], deployment["db"]).replace("postgres://", "postgresql://", 1)
    return psycopg.connect(dsn, autocommit=True)


def as_portal(deployment, *args):
    return manage(*args, DATABASE_URL=url(deployment["server"], deployment["portal"], deployment["db"]))


def test_migrate_runs_as_the_owner_and_the_portal_role_owns_nothing(deployment):
    assert f"Ran as {deployment['owner']!r} (MIGRATE_DATABASE_URL)" in deployment["migrated"]
    with connect(deployment, "owner") as conn:
        owners = conn.execute(
            "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall()
    assert owners == [(deployment["owner"],)]


def test_the_portal_role_appends_and_reads_the_trail_and_does_its_other_work(deployment):
    code = (
        "import audit; from audit.log import verify; from django.contrib.auth.models import Group;"
        "g = Group.objects.create(name='role-test'); g.name = 'role-test-renamed'; g.save(); g.delete();"
        "audit.record('role.test', details={'n': 1}); audit.record('role.test', details={'n': 2});"
        "r = verify(); print(r.ok, r.count)"
    )
    result = as_portal(deployment, "shell", "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["True", "2"]
    result = as_portal(deployment, "audit", "verify")
    assert "Audit chain intact: 2 events" in result.stdout, result.stderr
    result = as_portal(deployment, "audit", "head")
    assert "events=2 head_id=" in result.stdout, result.stderr
    assert as_portal(deployment, "clearsessions").returncode == 0


@pytest.mark.parametrize(
    "statement, refusal",
    [
        ("UPDATE audit_auditevent SET action = 'nothing.happened'", "permission denied for table audit_auditevent"),
        ("DELETE FROM audit_auditevent", "permission denied for table audit_auditevent"),
        ("TRUNCATE audit_auditevent", "permission denied for table audit_auditevent"),
        (
            "ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only",
            "must be owner of table audit_auditevent",
        ),
        ("DROP TABLE audit_auditevent", "must be owner of table audit_auditevent"),
        (
            "CREATE TRIGGER sneak BEFORE INSERT ON audit_auditevent FOR EACH ROW EXECUTE FUNCTION "
            "audit_event_append_only()",
            "permission denied for table audit_auditevent",
        ),
    ],
)
def test_the_portal_role_cannot_rewrite_remove_or_unguard_the_trail(deployment, statement, refusal):
    with connect(deployment, "portal") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege, match=refusal):
        conn.execute(statement)


def test_even_the_owner_is_refused_truncate_by_the_trigger(deployment):
    with (
        connect(deployment, "owner") as conn,
        pytest.raises(psycopg.errors.RaiseException, match=r"append-only \(TRUNCATE refused\)"),
    ):
        conn.execute("TRUNCATE audit_auditevent")


def test_check_deploy_warns_while_the_portal_runs_as_the_owner_and_is_silent_as_the_portal_role(deployment):
    owner_url = url(deployment["server"], deployment["owner"], deployment["db"])
    as_owner = manage("check", "--deploy", DATABASE_URL=owner_url)
    assert "audit.W002" in as_owner.stderr + as_owner.stdout
    assert (
        f"The portal's database role '{deployment['owner']}' can rewrite or remove the audit trail: it owns "
        "audit_auditevent" in as_owner.stderr + as_owner.stdout
    )
    assert "MIGRATE_DATABASE_URL" in as_owner.stderr + as_owner.stdout

    as_portal_role = as_portal(deployment, "check", "--deploy")
    assert "audit.W001" not in as_portal_role.stderr and "audit.W002" not in as_portal_role.stderr


def test_check_deploy_warns_when_the_owners_url_is_left_in_the_portals_environment(deployment):
    result = as_portal(deployment, "check", "--deploy")
    assert "audit.W004" not in result.stderr
    result = manage(
        "check",
        "--deploy",
        DATABASE_URL=url(deployment["server"], deployment["portal"], deployment["db"]),
        MIGRATE_DATABASE_URL=url(deployment["server"], deployment["owner"], deployment["db"]),
    )
    assert "(audit.W004) MIGRATE_DATABASE_URL is set where the portal runs" in result.stderr


def test_a_superuser_portal_role_is_warned_about_too(deployment, server):
    result = manage("check", "--deploy", DATABASE_URL=url(server, server.username, deployment["db"]))
    assert "is a superuser (it may skip the triggers and rewrite anything)" in result.stderr + result.stdout


def test_migrate_says_so_when_the_portal_role_does_not_exist(deployment):
    result = manage(
        "migrate",
        "--noinput",
        DATABASE_URL=url(deployment["server"], "jit_nobody_" + uuid.uuid4().hex[:8], deployment["db"]),
        MIGRATE_DATABASE_URL=url(deployment["server"], deployment["owner"], deployment["db"]),
    )
    assert result.returncode != 0
    assert "Migrated, but could not give the portal's role 'jit_nobody_" in result.stderr
    assert "(create the role first" in result.stderr


def test_migrate_refuses_an_owner_url_for_another_database(deployment):
    result = manage(
        "migrate",
        "--noinput",
        DATABASE_URL=url(deployment["server"], deployment["portal"], deployment["db"]),
        MIGRATE_DATABASE_URL=url(deployment["server"], deployment["owner"], "postgres"),
    )
    assert result.returncode != 0
    assert "MIGRATE_DATABASE_URL names database 'postgres'" in result.stderr
    assert "they must be the same database; only the user (and password) differ" in result.stderr
