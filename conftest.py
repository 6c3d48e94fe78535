"""Fixtures shared by every test: a real PostgreSQL target cluster, personas, a demo catalog."""

import inspect
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest
from django.apps import apps
from django.conf import settings
from django.contrib.auth.hashers import get_hashers, get_hashers_by_algorithm
from django.db.backends.postgresql.operations import DatabaseOperations
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.operations import RunPython
from django.db.models.signals import post_migrate
from psycopg import sql
from psycopg.conninfo import make_conninfo

from devtools import pgcluster

# The test IdP (tests/e2e/idp's oidc-provider) for the identity tests: fixtures `oidc_provider` and `idp`.
pytest_plugins = ["accounts.tests.oidc_idp"]


def pytest_collection_modifyitems(config, items):
    """On SQLite (the embedded default), skip the tests marked `postgres_only` and `whatever_the_database`.

    Each marker gives its reason, and the skip says it.
    """
    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        return
    for item in items:
        marker = item.get_closest_marker("postgres_only")
        if marker is not None:
            if not marker.args:
                raise pytest.UsageError(
                    f'{item.nodeid}: postgres_only needs its reason, e.g. postgres_only("a trigger")'
                )
            item.add_marker(pytest.mark.skip(reason=f"PostgreSQL only: {marker.args[0]}"))
        marker = item.get_closest_marker("whatever_the_database")
        if marker is not None:
            if not marker.args:
                raise pytest.UsageError(f"{item.nodeid}: whatever_the_database needs its reason")
            item.add_marker(pytest.mark.skip(reason=f"Run once, by the PostgreSQL pass: {marker.args[0]}"))


@pytest.fixture(scope="session", autouse=True)
def quick_password_hashing():
    """Hash the fixtures' passwords with few PBKDF2 rounds (devtools.hashers): the default's cost minutes a pass."""
    settings.PASSWORD_HASHERS = ["devtools.hashers.QuickPBKDF2PasswordHasher", *settings.PASSWORD_HASHERS]
    get_hashers.cache_clear()
    get_hashers_by_algorithm.cache_clear()
    yield


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """On SQLite, test in a database file, as `make run` does, not in the shared in-memory default.

    The processes a test starts (workers, the timer, gunicorn, the CLI's
    portal) then reach the same database, and threads write it with their
    own connections, waiting for the write lock as the demo's processes do.
    """
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        folder = Path(tempfile.mkdtemp(prefix="jitportal-sqlite-"))
        database.setdefault("TEST", {})["NAME"] = str(folder / "test.sqlite3")
        yield
        shutil.rmtree(folder, ignore_errors=True)
    else:
        yield


@pytest.fixture
def portal_database_url(db, settings):
    """The URL of the test database, for the portal processes a test starts (DATABASE_URL)."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{database['NAME']}"
    return f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"


@pytest.fixture(scope="session", autouse=True)
def flush_past_the_audit_trigger():
    """Let the test runner empty the audit table between transactional tests.

    Django empties the database after a `transaction=True` test with one
    TRUNCATE of every table, which the trail's trigger refuses (as it should
    for anyone else). The suite runs as a superuser, so it may skip ordinary
    triggers for that one statement, as a replica would.
    """
    original = DatabaseOperations.execute_sql_flush

    def execute_sql_flush(self, sql_list):
        with self.connection.cursor() as cur:
            cur.execute("SET session_replication_role = replica")
        try:
            original(self, sql_list)
        finally:
            with self.connection.cursor() as cur:
                cur.execute("SET session_replication_role = DEFAULT")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DatabaseOperations, "execute_sql_flush", execute_sql_flush)
        yield


@pytest.fixture(scope="session", autouse=True)
def schedules_outlive_a_flush():
    """Put back the schedules the data migrations made whenever Django empties the database.

    A `transaction=True` test ends with a TRUNCATE of every table, django_q's
    Schedule too; Django then sends post_migrate (which brings back content
    types and permissions) but runs no data migration. Serially the runner
    keeps those tests last, but pytest-xdist (`make test` runs two workers,
    whole files each) runs a later file's tests after them, so this re-runs
    the migrations' own schedule functions (all update_or_create by name).
    """
    ours = {"accounts", "audit", "grants", "notifications"}
    functions = []
    for (label, _name), migration in sorted(MigrationLoader(None, ignore_no_migrations=True).disk_migrations.items()):
        for op in migration.operations if label in ours else ():
            if isinstance(op, RunPython) and '"django_q", "Schedule"' in inspect.getsource(inspect.getmodule(op.code)):
                functions.append(op.code)

    def put_back(sender, **kwargs):
        for code in functions:
            code(apps, None)  # none of them alters the schema

    post_migrate.connect(put_back, sender=apps.get_app_config("grants"), weak=False, dispatch_uid="tests.schedules")
    yield
    post_migrate.disconnect(sender=apps.get_app_config("grants"), dispatch_uid="tests.schedules")


@pytest.fixture(scope="session")
def pg_cluster():
    """Start a throwaway PostgreSQL target (scram-sha-256 on loopback) with the demo roles."""
    if not pgcluster.available():
        pytest.fail("PostgreSQL server programs are missing under /usr/lib/postgresql: `make test` installs them.")
    # Not pytest's tmp_path: /tmp/pytest-of-root is 0700, and the server runs
    # as the postgres OS user, which must reach its data and socket folders.
    base_dir = Path(tempfile.mkdtemp(prefix="jitportal-pg-"))
    cluster = pgcluster.DevCluster(base_dir)
    try:
        cluster.start()
        cluster.setup_demo_roles()
        yield cluster
    finally:
        cluster.destroy()  # its files too, wherever they went


@pytest.fixture
def pg_target_env(pg_cluster, monkeypatch, settings):
    monkeypatch.setenv("JIT_TEST_PG_DSN", pg_cluster.admin_dsn)
    yield pg_cluster
    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        # SQLite gives a rolled-back test's ids back, so the next test's grant 1 is `jit_g1` again: remove
        # what this test's grants left on the shared target, or the next one finds it. PostgreSQL never
        # hands a sequence number out twice.
        _drop_grant_roles(pg_cluster)


def _drop_grant_roles(cluster):
    """Drop every role under the connector's prefix on `cluster`, its sessions and what it owns first."""
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as conn:
        roles = [name for (name,) in conn.execute(r"SELECT rolname FROM pg_roles WHERE rolname LIKE 'jit\_%'")]
        if not roles:
            return
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)", [roles])
        databases = [name for (name,) in conn.execute("SELECT datname FROM pg_database WHERE datallowconn")]
    for database in databases:
        with psycopg.connect(make_conninfo(cluster.admin_dsn, dbname=database), autocommit=True) as conn:
            for role in roles:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as conn:
        for role in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
