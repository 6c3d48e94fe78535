"""PostgresConnector against a real PostgreSQL server (the session's DevCluster).

The connector has no dependency on the portal's database: grants and targets
are plain namespaces here, and no test needs Django's test database.
"""

import datetime
import itertools
import time
from types import SimpleNamespace

import psycopg
import pytest
from psycopg import sql

from grants import devcluster
from grants.connectors.base import ConnectorError
from grants.connectors.postgres import PostgresConnector, scram_sha256_verifier

SECRET_ENV = "JIT_TEST_PG_ADMIN_DSN"
# Far above the ids of real grants that other tests leave on the shared target cluster.
_grant_ids = itertools.count(800_000_001)


def _in(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)


def _login(credentials: dict) -> psycopg.Connection:
    return psycopg.connect(credentials["dsn"], autocommit=True, connect_timeout=5)


@pytest.fixture
def target(pg_cluster, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, pg_cluster.admin_dsn)
    config = {"host": pg_cluster.host, "port": pg_cluster.port, "dbname": "appdb"}
    return SimpleNamespace(name="demo-pg", kind="postgres", config=config, secret_env=SECRET_ENV)


@pytest.fixture
def connector(target):
    with PostgresConnector(target) as c:
        yield c


@pytest.fixture
def admin(pg_cluster):
    with psycopg.connect(pg_cluster.dsn("appdb"), autocommit=True) as conn:
        yield conn


@pytest.fixture
def make_grant(connector):
    """Build grants with fresh ids; revoke whatever they left behind after the test."""
    made = []

    def make(roles=("app_readonly",), *, seconds=600, **scope):
        grant = SimpleNamespace(pk=next(_grant_ids), expires_at=_in(seconds), scope={"roles": list(roles), **scope})
        made.append(grant)
        return grant

    yield make
    for grant in made:
        connector.revoke(grant)


def _memberships(admin, role):
    rows = admin.execute(
        "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
        " WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = %s) ORDER BY 1",
        [role],
    ).fetchall()
    return [name for (name,) in rows]


def test_issued_credentials_log_in_over_tcp_and_read_orders(connector, make_grant):
    grant = make_grant()
    result = connector.provision(grant)

    assert result.external_ref == f"jit_g{grant.pk}"
    assert result.expires_at == grant.expires_at
    creds = result.credentials
    assert creds["username"] == result.external_ref
    assert (creds["host"], creds["dbname"]) == ("127.0.0.1", "appdb")
    with _login(creds) as conn:
        assert conn.execute("SELECT inet_server_addr() IS NOT NULL, current_user").fetchone() == (True, creds["username"])
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] > 0


def test_write_outside_the_profile_is_refused(connector, make_grant):
    creds = connector.provision(make_grant(["app_readonly"])).credentials

    with _login(creds) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO orders (customer, amount) VALUES ('Mallory', 1)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE sneaky (id int)")


def test_server_stores_only_a_scram_verifier(connector, make_grant, admin):
    result = connector.provision(make_grant())

    stored = admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [result.external_ref]).fetchone()[0]
    assert stored.startswith("SCRAM-SHA-256$4096:")
    assert result.credentials["password"] not in stored


def test_scram_verifier_matches_rfc7677_format():
    verifier = scram_sha256_verifier("pencil", salt=b"0123456789abcdef")

    assert verifier.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    stored_key, server_key = verifier.split("$")[2].split(":")
    assert len(stored_key) == len(server_key) == 44  # base64 of 32 bytes


def test_provisioning_twice_gives_one_role_and_only_the_latest_password_works(connector, make_grant, admin):
    grant = make_grant()
    first = connector.provision(grant).credentials
    second = connector.provision(grant).credentials

    assert first["password"] != second["password"]
    assert admin.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", [second["username"]]).fetchone()[0] == 1
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _login(first)
    with _login(second) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] > 0


def test_reprovisioning_removes_memberships_outside_the_scope(connector, make_grant, admin):
    grant = make_grant(["app_readonly", "app_readwrite"])
    role = connector.provision(grant).external_ref
    assert _memberships(admin, role) == ["app_readonly", "app_readwrite"]

    grant.scope["roles"] = ["app_readonly"]
    connector.provision(grant)

    assert _memberships(admin, role) == ["app_readonly"]


def test_login_fails_after_valid_until_but_an_open_session_lives_on_until_revoke(connector, make_grant):
    # PostgreSQL checks VALID UNTIL only at authentication: a session opened
    # before expiry keeps working. That is why revocation terminates sessions.
    grant = make_grant(seconds=2)
    creds = connector.provision(grant).credentials
    early = _login(creds)

    time.sleep(max(0.0, (grant.expires_at - _in(0)).total_seconds()) + 0.3)

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _login(creds)
    assert early.execute("SELECT count(*) FROM orders").fetchone()[0] > 0

    connector.revoke(grant)

    with pytest.raises(psycopg.OperationalError):
        early.execute("SELECT 1")
    early.close()


def test_revoke_refuses_new_logins_and_ends_open_sessions(connector, make_grant):
    grant = make_grant()
    creds = connector.provision(grant).credentials
    session = _login(creds)

    connector.revoke(grant)

    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()
    with pytest.raises(psycopg.OperationalError):
        _login(creds)
    assert not connector.is_present(grant)


def test_revoke_hands_objects_the_user_created_to_the_owner_role(connector, make_grant, admin):
    grant = make_grant(["app_readwrite"], owner_role="app_owner")
    creds = connector.provision(grant).credentials
    table, seq = f"scratch_{grant.pk}", f"counter_{grant.pk}"
    with _login(creds) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(table)))
        conn.execute(sql.SQL("CREATE SEQUENCE {}").format(sql.Identifier(seq)))

    connector.revoke(grant)

    owners = admin.execute(
        "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.relname = ANY(%s) ORDER BY 1",
        [[table, seq]],
    ).fetchall()
    assert owners == [(seq, "app_owner"), (table, "app_owner")]
    assert not connector.is_present(grant)


def test_revoke_without_owner_role_drops_the_users_objects(connector, make_grant, admin):
    grant = make_grant(["app_readwrite"])
    creds = connector.provision(grant).credentials
    table = f"scratch_{grant.pk}"
    with _login(creds) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(table)))

    connector.revoke(grant)

    assert admin.execute("SELECT to_regclass(%s)", [f"public.{table}"]).fetchone()[0] is None
    assert not connector.is_present(grant)


def test_revoking_twice_or_revoking_what_never_existed_succeeds(connector, make_grant):
    grant = make_grant()
    connector.provision(grant)

    connector.revoke(grant)
    connector.revoke(grant)
    connector.revoke(make_grant())

    assert not connector.is_present(grant)


def test_is_present_while_the_role_exists(connector, make_grant):
    grant = make_grant()
    assert not connector.is_present(grant)

    connector.provision(grant)

    assert connector.is_present(grant)


def test_list_managed_lists_grant_roles_and_nothing_else(connector, make_grant, admin):
    role = connector.provision(make_grant()).external_ref
    # Look-alikes a careless LIKE 'jit_g%' would match ('_' is a wildcard).
    lookalikes = ["jit_gadmin", "jitxg7", "jit_g12x"]
    for name in lookalikes:
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
    try:
        managed = connector.list_managed()
    finally:
        for name in lookalikes:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))

    assert role in managed
    assert not managed & {"app_readonly", "app_owner", "jitadmin", *lookalikes}


def test_unknown_scope_role_is_a_permanent_error_and_creates_nothing(connector, make_grant):
    grant = make_grant(["app_readonly", "no_such_role"])

    with pytest.raises(ConnectorError, match="no_such_role") as info:
        connector.provision(grant)

    assert info.value.permanent
    assert not connector.is_present(grant)


def test_check_passes_on_a_clean_cluster(connector):
    assert connector.check() == []


def test_check_warns_about_a_trust_line(connector, pg_cluster):
    # pg_hba_file_rules reads the file on disk, so no reload is needed and
    # the server's real authentication never changes.
    original = pg_cluster.hba_file.read_text()
    try:
        with open(pg_cluster.hba_file, "a") as fh:
            fh.write("host appdb all 10.255.255.1/32 trust\n")
            fh.write("host appdb someone_else 10.255.255.2/32 trust\n")
            fh.write("host appdb all 10.255.255.3/32 scram-sha-256\n")
        warnings = connector.check()
    finally:
        pg_cluster.hba_file.write_text(original)

    assert len(warnings) == 1
    assert "trust" in warnings[0] and "all users" in warnings[0]


def test_check_raises_a_clear_error_for_an_unreachable_port(target, monkeypatch, pg_cluster):
    port = devcluster.free_port()
    monkeypatch.setenv(SECRET_ENV, pg_cluster.admin_dsn.replace(f":{pg_cluster.port}/", f":{port}/"))

    with PostgresConnector(target) as connector, pytest.raises(ConnectorError) as info:
        connector.check()

    assert not info.value.permanent
    assert "demo-pg" in info.value.message and str(port) in info.value.message
    assert pg_cluster.admin_password not in info.value.message


def test_wrong_admin_password_is_reported_without_echoing_it(target, monkeypatch, pg_cluster):
    monkeypatch.setenv(SECRET_ENV, pg_cluster.admin_dsn.replace(pg_cluster.admin_password, "WrongPassword123"))

    with PostgresConnector(target) as connector, pytest.raises(ConnectorError, match="password authentication failed") as info:
        connector.check()

    assert "WrongPassword123" not in info.value.message


def test_revoking_a_batch_ends_sessions_hands_over_objects_and_tolerates_missing_roles(connector, make_grant, admin):
    writer = make_grant(["app_readwrite"], owner_role="app_owner")
    reader = make_grant(["app_readonly"])
    never = make_grant(["app_readonly"])  # never provisioned: already gone
    wcreds = connector.provision(writer).credentials
    rcreds = connector.provision(reader).credentials
    table = f"batch_{writer.pk}"
    with _login(wcreds) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(table)))
    session = _login(rcreds)

    errors = connector.revoke_many([writer, reader, never])

    assert errors == {}
    assert connector.present_many([writer, reader, never]) == set()
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        _login(rcreds)
    owner = admin.execute("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = %s", [table]).fetchone()
    assert owner == ("app_owner",)
    assert connector.revoke_many([writer, reader]) == {}  # again: nothing left, no error
