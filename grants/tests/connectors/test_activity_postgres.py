"""What PostgreSQL kept about a grant's role (pg_stat_statements), read by `revoke_many` before DROP ROLE.

Against the session's DevCluster, which preloads pg_stat_statements and has
the extension in its admin and demo databases; a database made here without
it stands for a target where the extension was never created.
"""

import datetime
import itertools
from types import SimpleNamespace

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from grants.connectors import digest
from grants.connectors.postgres import PostgresConnector

SECRET_ENV = "JIT_TEST_PG_ACTIVITY_DSN"
# Far above the ids of real grants and of test_postgres.py's.
_grant_ids = itertools.count(810_000_001)


def _grant(roles=("app_readonly",)):
    expires_at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=10)
    return SimpleNamespace(pk=next(_grant_ids), expires_at=expires_at, scope={"roles": list(roles)})


def _target(pg_cluster, monkeypatch, dbname="appdb", admin_db=None):
    dsn = pg_cluster.admin_dsn if admin_db is None else make_conninfo(pg_cluster.admin_dsn, dbname=admin_db)
    monkeypatch.setenv(SECRET_ENV, dsn)
    config = {"host": pg_cluster.host, "port": pg_cluster.port, "dbname": dbname}
    return SimpleNamespace(name="activity-pg", kind="postgres", config=config, secret_env=SECRET_ENV)


@pytest.fixture
def connector(pg_cluster, monkeypatch):
    with PostgresConnector(_target(pg_cluster, monkeypatch)) as c:
        yield c


@pytest.fixture
def bare_database(pg_cluster):
    """A database without the pg_stat_statements extension (the library is still preloaded)."""
    name = "noext"
    with psycopg.connect(pg_cluster.admin_dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO app_readonly").format(sql.Identifier(name)))
    return name


def _run(credentials, *statements, dbname=None):
    dsn = credentials["dsn"] if dbname is None else make_conninfo(credentials["dsn"], dbname=dbname)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def test_revocation_keeps_each_roles_statements_calls_and_the_sessions_it_ended(connector):
    reader, idle = _grant(), _grant()
    creds = connector.provision(reader).credentials
    connector.provision(idle)
    _run(creds, *["SELECT count(*) FROM public.orders"] * 3, "SELECT customer FROM public.orders WHERE amount > 100")
    open_session = psycopg.connect(creds["dsn"], autocommit=True)

    assert connector.revoke_many([reader, idle]) == {}

    mine = connector.take_activity([reader.pk, idle.pk])
    statements = {s["query"]: s for s in mine[reader.pk]["statements"]}
    count = statements["SELECT count(*) FROM public.orders"]
    assert (count["calls"], count["rows"], count["database"]) == (3, 3, "appdb")
    assert "SELECT customer FROM public.orders WHERE amount > $1" in statements
    assert mine[reader.pk]["totals"]["calls"] >= 4
    assert [s["database"] for s in mine[reader.pk]["open_sessions"]] == ["appdb"]
    assert mine[reader.pk]["summary"].endswith("1 open at revocation")
    assert mine[idle.pk]["statements"] == [] and mine[idle.pk]["summary"] == "0 statements, 0 calls"
    assert connector.activity == {}
    open_session.close()


def test_the_digest_keeps_the_top_statements_by_time_and_totals_over_all(connector):
    grant = _grant()
    creds = connector.provision(grant).credentials
    # Each select list has its own length, so each is a statement of its own for pg_stat_statements.
    _run(creds, *("SELECT " + ", ".join(["1"] * n) for n in range(1, digest.MAX_STATEMENTS + 11)))

    connector.revoke_many([grant])

    kept = connector.take_activity([grant.pk])[grant.pk]
    assert len(kept["statements"]) == digest.MAX_STATEMENTS
    assert kept["totals"]["statements"] == digest.MAX_STATEMENTS + 10
    times = [s["total_ms"] for s in kept["statements"]]
    assert times == sorted(times, reverse=True)


def test_without_the_extension_the_digest_says_why_and_the_revocation_goes_on(pg_cluster, monkeypatch, bare_database):
    target = _target(pg_cluster, monkeypatch, dbname=bare_database, admin_db=bare_database)
    with PostgresConnector(target) as connector:
        grant = _grant()
        _run(connector.provision(grant).credentials, "SELECT 1")

        assert connector.revoke_many([grant]) == {}

        kept = connector.take_activity([grant.pk])[grant.pk]
        assert kept["unavailable"] == (
            "pg_stat_statements is not installed in database 'noext' of target 'activity-pg'"
            " (CREATE EXTENSION pg_stat_statements)."
        )
        assert kept["summary"].startswith("unavailable: pg_stat_statements is not installed")
        assert connector.present_many([grant]) == set()


def test_check_warns_when_revocation_cannot_read_what_grant_users_ran(pg_cluster, monkeypatch, bare_database):
    with PostgresConnector(_target(pg_cluster, monkeypatch, dbname=bare_database, admin_db=bare_database)) as c:
        warnings = c.check()
    assert [w for w in warnings if w.startswith("No activity digest at revocation: pg_stat_statements is not")]


def test_check_is_quiet_about_activity_where_the_extension_is_there(connector):
    assert not [w for w in connector.check() if "activity digest" in w]


def test_the_extension_in_the_targets_database_is_enough(pg_cluster, monkeypatch, bare_database):
    # The admin DSN names a database without the extension; the target's own database has it.
    with PostgresConnector(_target(pg_cluster, monkeypatch, dbname="appdb", admin_db=bare_database)) as connector:
        grant = _grant()
        _run(connector.provision(grant).credentials, "SELECT count(*) FROM public.orders")

        connector.revoke_many([grant])

        kept = connector.take_activity([grant.pk])[grant.pk]
    assert "unavailable" not in kept
    assert [s["calls"] for s in kept["statements"] if s["query"] == "SELECT count(*) FROM public.orders"] == [1]
