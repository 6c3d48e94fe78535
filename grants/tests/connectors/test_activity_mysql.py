"""What MariaDB kept about a grant's account (performance_schema), read by `revoke_many` before DROP USER.

Against a MariaDB server these tests start with performance_schema on
(mariadb_server.py); the machine's own server, which has it off, shows the
"unavailable" digest.
"""

import datetime
import itertools
from types import SimpleNamespace

import pymysql
import pytest

from grants.connectors.mysql import MySQLConnector

from . import mariadb_server
from . import mariadb_support as db

SECRET_ENV = "JIT_TEST_MYSQL_ACTIVITY_URL"
# Far above the ids test_mysql.py uses; the accounts live only on this file's own server, but for the last test.
_grant_ids = itertools.count(7_600_001)


@pytest.fixture(scope="module")
def server():
    if not mariadb_server.available():
        pytest.fail("MariaDB's server programs are missing: apt-get install -y mariadb-server.")
    own = mariadb_server.MariaDBServer().start()
    try:
        with pymysql.connect(**db.url_params(own.root_url), autocommit=True) as conn:
            db.set_up_demo(conn)
        yield own
    finally:
        own.stop()


def _connector(url, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, url)
    params = db.url_params(url)
    config = {"host": params["host"], "port": params["port"], "database": db.DATABASE}
    return MySQLConnector(SimpleNamespace(name="activity-mysql", kind="mysql", config=config, secret_env=SECRET_ENV))


def _grant(role=db.READER):
    expires_at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=10)
    return SimpleNamespace(pk=next(_grant_ids), expires_at=expires_at, scope={"roles": [role]})


# On the shared server: not test_mysql.py's roles, which it drops and makes again meanwhile.
SHARED_ROLE = "jit_test_activity_reader"


def _login(credentials):
    return pymysql.connect(
        host=credentials["host"], port=int(credentials["port"]), user=credentials["username"],
        password=credentials["password"], database=credentials["database"], autocommit=True, connect_timeout=5,
    )  # fmt: skip


def test_revocation_keeps_the_accounts_statement_counts_by_kind_and_the_sessions_it_ended(server, monkeypatch):
    with _connector(server.root_url, monkeypatch) as connector:
        reader, idle = _grant(), _grant()
        creds = connector.provision(reader).credentials
        connector.provision(idle)
        session = _login(creds)
        with session.cursor() as cur:
            for _ in range(3):
                cur.execute("SELECT customer FROM orders WHERE amount > 5")
                cur.fetchall()

        assert connector.revoke_many([reader, idle]) == {}

        kept = connector.take_activity([reader.pk, idle.pk])
    by_kind = {s["query"]: s for s in kept[reader.pk]["statements"]}
    assert by_kind["statement/sql/select"]["calls"] >= 3
    assert by_kind["statement/sql/select"]["rows"] >= 9
    assert [s["database"] for s in kept[reader.pk]["open_sessions"]] == [db.DATABASE]
    assert kept[reader.pk]["summary"].endswith("1 open at revocation")
    assert "statement kind" in kept[reader.pk]["summary"]
    assert kept[idle.pk]["statements"] == [] and kept[idle.pk]["totals"]["calls"] == 0
    session.close()


def test_where_performance_schema_is_off_the_digest_says_so_and_the_revocation_goes_on(monkeypatch):
    # The machine's server, which has performance_schema off (and must stay so).
    try:
        pymysql.connect(**db.url_params(db.root_url()), connect_timeout=5).close()
    except pymysql.MySQLError as exc:
        pytest.fail(f"MariaDB is not reachable at {db.root_url()} ({exc}); set {db.ROOT_URL_ENV} or start the server.")
    with pymysql.connect(**db.url_params(db.root_url()), autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT @@performance_schema")
        if cur.fetchone()[0]:
            pytest.skip("the machine's MariaDB has performance_schema on: nothing here shows the off case")
        cur.execute(f"CREATE ROLE IF NOT EXISTS {SHARED_ROLE}")
    try:
        with _connector(db.root_url(), monkeypatch) as connector:
            grant = _grant(SHARED_ROLE)
            connector.provision(grant)

            assert connector.revoke_many([grant]) == {}

            kept = connector.take_activity([grant.pk])[grant.pk]
            assert not connector.is_present(grant)
    finally:
        with pymysql.connect(**db.url_params(db.root_url()), autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(f"DROP ROLE IF EXISTS {SHARED_ROLE}")
    assert kept["unavailable"] == (
        "performance_schema is off on target 'activity-mysql' (performance_schema=ON, restart)."
    )
