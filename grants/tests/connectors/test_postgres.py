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

from devtools import pgcluster
from grants.connectors.base import ConnectorError
from grants.connectors.postgres import PostgresConnector
from grants.connectors.postgres.connector import scram_sha256_verifier

SECRET_ENV = "JIT_TEST_PG_ADMIN_DSN"
# Far above the ids of real grants that other tests leave on the shared target cluster.
_grant_ids = itertools.count(800_000_001)


def _in(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)


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
        assert conn.execute("SELECT inet_server_addr() IS NOT NULL, current_user").fetchone() == (
            True,
            creds["username"],
        )
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
    port = pgcluster.free_port()
    monkeypatch.setenv(SECRET_ENV, pg_cluster.admin_dsn.replace(f":{pg_cluster.port}/", f":{port}/"))

    with PostgresConnector(target) as connector, pytest.raises(ConnectorError) as info:
        connector.check()

    assert not info.value.permanent
    assert "demo-pg" in info.value.message and str(port) in info.value.message
    assert pg_cluster.admin_password not in info.value.message


def test_wrong_admin_password_is_reported_without_echoing_it(target, monkeypatch, pg_cluster):
    monkeypatch.setenv(SECRET_ENV, pg_cluster.admin_dsn.replace(pg_cluster.admin_password, "WrongPassword123"))

    with (
        PostgresConnector(target) as connector,
        pytest.raises(ConnectorError, match="password authentication failed") as info,
    ):
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


# What a grant user made or granted does not outlive the grant ---------------
#
# Until revocation inventoried and dropped code, it ran REASSIGN OWNED to the
# profile's owner role: a function or view the user left ran with the owner
# role's rights from then on, for anyone.


@pytest.fixture
def public_may_create(admin):
    """Let every role create in schema public of appdb, as PostgreSQL 14 and older do by default."""
    admin.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    yield
    admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")


@pytest.fixture
def payroll(admin):
    """A table of app_owner's that no grant role may read."""
    name = f"payroll_{next(_grant_ids)}"
    admin.execute(sql.SQL("CREATE TABLE {} (name text, salary int)").format(sql.Identifier(name)))
    admin.execute(sql.SQL("INSERT INTO {} VALUES ('ceo', 900000)").format(sql.Identifier(name)))
    admin.execute(sql.SQL("ALTER TABLE {} OWNER TO app_owner").format(sql.Identifier(name)))
    # The cluster's default privileges give app_readonly SELECT on new tables.
    admin.execute(sql.SQL("REVOKE ALL ON {} FROM app_readonly, PUBLIC").format(sql.Identifier(name)))
    yield name
    admin.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def bystander(admin, pg_cluster):
    """Credentials of an unprivileged role that may connect to appdb and nothing more."""
    name, password = f"bystander_{next(_grant_ids)}", "bystander-password-1"
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))
    admin.execute(sql.SQL("GRANT CONNECT ON DATABASE appdb TO {}").format(sql.Identifier(name)))
    yield {"username": name, "dsn": f"postgresql://{name}:{password}@{pg_cluster.host}:{pg_cluster.port}/appdb"}
    admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    admin.execute(sql.SQL("REVOKE CONNECT ON DATABASE appdb FROM {}").format(sql.Identifier(name)))
    admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _found(connector, grant, kind=None):
    return [item for item in connector.take_inventory(grant.pk) if kind is None or item["kind"] == kind]


def test_read_only_user_cannot_leave_a_security_definer_function_behind(
    connector, make_grant, admin, public_may_create, payroll, bystander
):
    grant = make_grant(["app_readonly"], owner_role="app_owner")
    peek = f"peek_{grant.pk}"
    with _login(connector.provision(grant).credentials) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(payroll)))
        conn.execute(
            sql.SQL("CREATE FUNCTION public.{}() RETURNS SETOF {} LANGUAGE sql SECURITY DEFINER AS {}").format(
                sql.Identifier(peek), sql.Identifier(payroll), sql.Literal(f"SELECT * FROM public.{payroll}")
            )
        )

    connector.revoke(grant)

    with _login(bystander) as conn, pytest.raises(psycopg.errors.UndefinedFunction):
        conn.execute(sql.SQL("SELECT * FROM public.{}()").format(sql.Identifier(peek)))
    assert admin.execute("SELECT count(*) FROM pg_proc WHERE proname = %s", [peek]).fetchone()[0] == 0
    found = _found(connector, grant)
    assert {"database": "appdb", "kind": "function", "name": f"public.{peek}()", "action": "dropped"} in found
    assert not connector.is_present(grant)


def test_a_view_the_user_opened_to_public_is_gone_with_the_grant(
    connector, make_grant, admin, public_may_create, payroll, bystander
):
    grant = make_grant(["app_readonly"], owner_role="app_owner")
    view = f"salaries_{grant.pk}"
    with _login(connector.provision(grant).credentials) as conn:
        conn.execute(
            sql.SQL("CREATE VIEW public.{} AS SELECT * FROM public.{}").format(
                sql.Identifier(view), sql.Identifier(payroll)
            )
        )
        conn.execute(sql.SQL("GRANT SELECT ON public.{} TO PUBLIC").format(sql.Identifier(view)))

    connector.revoke(grant)

    with _login(bystander) as conn, pytest.raises(psycopg.errors.UndefinedTable):
        conn.execute(sql.SQL("SELECT * FROM public.{}").format(sql.Identifier(view)))
    found = _found(connector, grant)
    assert {"database": "appdb", "kind": "view", "name": f"public.{view}", "action": "dropped"} in found
    assert {
        "database": "appdb",
        "kind": "privilege",
        "name": f"SELECT on view public.{view} to PUBLIC",
        "action": "revoked",
    } in found


def test_a_writers_table_is_handed_over_with_its_data_but_without_its_trigger_rule_policy_or_grants(
    connector, make_grant, admin, bystander
):
    grant = make_grant(["app_readwrite"], owner_role="app_owner")
    table, audit_fn = f"notes_{grant.pk}", f"stamp_{grant.pk}"
    t, f = sql.Identifier("public", table), sql.Identifier("public", audit_fn)
    with _login(connector.provision(grant).credentials) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, body text, secret text)").format(t))
        conn.execute(sql.SQL("INSERT INTO {} (body, secret) VALUES ('kept', 's')").format(t))
        conn.execute(
            sql.SQL("CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$").format(f)
        )
        conn.execute(
            sql.SQL("CREATE TRIGGER stamp BEFORE INSERT ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(t, f)
        )
        conn.execute(sql.SQL("CREATE RULE tell AS ON UPDATE TO {} DO ALSO NOTIFY notes").format(t))
        conn.execute(sql.SQL("CREATE POLICY everyone ON {} USING (true)").format(t))
        conn.execute(sql.SQL("GRANT SELECT, INSERT ON {} TO PUBLIC").format(t))
        conn.execute(sql.SQL("GRANT SELECT (secret) ON {} TO {}").format(t, sql.Identifier(bystander["username"])))

    connector.revoke(grant)

    owner, acl = admin.execute(
        "SELECT pg_get_userbyid(relowner), relacl::text[] FROM pg_class WHERE oid = %s::regclass", [f"public.{table}"]
    ).fetchone()
    assert owner == "app_owner"
    assert acl == ["app_owner=arwdDxt/app_owner"]
    assert admin.execute(sql.SQL("SELECT body FROM {}").format(t)).fetchall() == [("kept",)]
    attached = admin.execute(
        "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = %(t)s::regclass AND NOT tgisinternal),"
        " (SELECT count(*) FROM pg_rewrite WHERE ev_class = %(t)s::regclass),"
        " (SELECT count(*) FROM pg_policy WHERE polrelid = %(t)s::regclass),"
        " (SELECT count(*) FROM pg_attribute WHERE attrelid = %(t)s::regclass AND attacl IS NOT NULL)",
        {"t": f"public.{table}"},
    ).fetchone()
    assert attached == (0, 0, 0, 0)
    assert admin.execute("SELECT to_regprocedure(%s)", [f"public.{audit_fn}()"]).fetchone()[0] is None
    with _login(bystander) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(sql.SQL("SELECT secret FROM {}").format(t))
    found = {(item["kind"], item["name"], item["action"]) for item in _found(connector, grant)}
    assert {
        ("table", f"public.{table}", "reassigned to app_owner"),
        ("sequence", f"public.{table}_id_seq", "reassigned to app_owner"),
        ("function", f"public.{audit_fn}()", "dropped"),
        ("trigger", f"stamp on public.{table}", "dropped"),
        ("rule", f"tell on public.{table}", "dropped"),
        ("policy", f"everyone on public.{table}", "dropped"),
        ("privilege", f"INSERT, SELECT on table public.{table} to PUBLIC", "revoked"),
        ("privilege", f"SELECT on table public.{table} to {bystander['username']}", "revoked"),
    } <= found
    admin.execute(sql.SQL("DROP TABLE {}").format(t))


def test_objects_in_a_second_database_are_found_and_dropped(connector, make_grant, admin, pg_cluster):
    grant = make_grant(["app_readonly"], owner_role="app_owner")
    other = f"scratch_db_{grant.pk}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(other)))
    try:
        with psycopg.connect(pg_cluster.dsn(other), autocommit=True) as conn:
            conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        creds = connector.provision(grant).credentials
        with psycopg.connect(creds["dsn"].replace("/appdb", f"/{other}"), autocommit=True) as conn:
            conn.execute("CREATE FUNCTION public.hello() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1'")
            oid = conn.execute("SELECT lo_from_bytea(0, 'kept secret')").fetchone()[0]

        connector.revoke(grant)

        with psycopg.connect(pg_cluster.dsn(other), autocommit=True) as conn:
            assert conn.execute("SELECT to_regprocedure('public.hello()')").fetchone()[0] is None
            assert conn.execute("SELECT count(*) FROM pg_largeobject_metadata WHERE oid = %s", [oid]).fetchone()[0] == 0
        found = _found(connector, grant)
        assert {"database": other, "kind": "function", "name": "public.hello()", "action": "dropped"} in found
        assert {"database": other, "kind": "large object", "name": str(oid), "action": "dropped"} in found
        assert not connector.is_present(grant)
    finally:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(other)))


def test_privileges_the_user_passed_on_with_a_grant_option_are_taken_back(
    connector, make_grant, admin, payroll, bystander
):
    grant = make_grant(["app_readonly"])
    role = connector.provision(grant).external_ref
    admin.execute(
        sql.SQL("GRANT SELECT ON {} TO {} WITH GRANT OPTION").format(sql.Identifier(payroll), sql.Identifier(role))
    )
    with _login(connector.provision(grant).credentials) as conn:
        conn.execute(
            sql.SQL("GRANT SELECT ON public.{} TO {}").format(
                sql.Identifier(payroll), sql.Identifier(bystander["username"])
            )
        )

    connector.revoke(grant)

    assert not connector.is_present(grant)
    with _login(bystander) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(sql.SQL("SELECT * FROM public.{}").format(sql.Identifier(payroll)))
    assert _found(connector, grant) == [
        {
            "database": "appdb",
            "kind": "privilege",
            "name": f"SELECT on table public.{payroll} to {bystander['username']}",
            "action": "revoked",
        }
    ]


def test_a_trigger_the_user_put_on_someone_elses_table_goes_with_its_function(connector, make_grant, admin, payroll):
    grant = make_grant(["app_readonly"], owner_role="app_owner")
    role = connector.provision(grant).external_ref
    fn = f"snoop_{grant.pk}"
    # Privileges granted to the grant role itself: DROP OWNED takes them back with the role.
    admin.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(role)))
    admin.execute(sql.SQL("GRANT TRIGGER ON {} TO {}").format(sql.Identifier(payroll), sql.Identifier(role)))
    with _login(connector.provision(grant).credentials) as conn:
        conn.execute(
            sql.SQL("CREATE FUNCTION public.{}() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$").format(
                sql.Identifier(fn)
            )
        )
        conn.execute(
            sql.SQL("CREATE TRIGGER snoop BEFORE INSERT ON public.{} FOR EACH ROW EXECUTE FUNCTION public.{}()").format(
                sql.Identifier(payroll), sql.Identifier(fn)
            )
        )

    connector.revoke(grant)

    triggers = admin.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal", [payroll]
    ).fetchall()
    assert triggers == []
    assert admin.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(payroll))).fetchone()[0] == 1
    found = _found(connector, grant)
    assert {"database": "appdb", "kind": "trigger", "name": f"snoop on public.{payroll}", "action": "dropped"} in found
    assert {"database": "appdb", "kind": "function", "name": f"public.{fn}()", "action": "dropped"} in found


def test_revocation_never_cascades_into_another_roles_objects(connector, make_grant, admin, public_may_create):
    grant = make_grant(["app_readonly"], owner_role="app_owner")
    fn, view = f"helper_{grant.pk}", f"uses_helper_{grant.pk}"
    with _login(connector.provision(grant).credentials) as conn:
        conn.execute(
            sql.SQL("CREATE FUNCTION public.{}() RETURNS int LANGUAGE sql AS 'SELECT 42'").format(sql.Identifier(fn))
        )
    admin.execute(
        sql.SQL("CREATE VIEW public.{} AS SELECT public.{}() AS answer").format(
            sql.Identifier(view), sql.Identifier(fn)
        )
    )
    admin.execute(sql.SQL("ALTER VIEW public.{} OWNER TO app_owner").format(sql.Identifier(view)))

    with pytest.raises(ConnectorError, match=f"view {view} depends on function {fn}") as info:
        connector.revoke(grant)

    assert not info.value.permanent
    assert admin.execute("SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = %s", [fn]).fetchone() == (
        f"jit_g{grant.pk}",
    )
    assert admin.execute(sql.SQL("SELECT answer FROM public.{}").format(sql.Identifier(view))).fetchone() == (42,)
    assert connector.is_present(grant)  # kept, without login or memberships, until someone decides

    admin.execute(sql.SQL("DROP VIEW public.{}").format(sql.Identifier(view)))
    connector.revoke(grant)
    assert not connector.is_present(grant)


# Scope roles that reach superuser or administrative built-ins are refused -


@pytest.fixture
def make_role(admin):
    made = []

    def make(name, *attributes, member_of=()):
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN " + " ".join(attributes)).format(sql.Identifier(name)))
        made.append(name)
        for group in member_of:
            admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(name)))
        return name

    yield make
    for name in reversed(made):
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_a_scope_naming_pg_execute_server_program_is_refused_and_creates_nothing(connector, make_grant):
    grant = make_grant(["app_readonly", "pg_execute_server_program"])

    with pytest.raises(ConnectorError, match="pg_execute_server_program runs programs on the database server") as info:
        connector.provision(grant)

    assert info.value.permanent
    assert not connector.is_present(grant)
    with pytest.raises(ConnectorError, match="pg_execute_server_program"):
        connector.validate_scope(grant.scope)


def test_a_scope_role_that_is_a_member_of_a_superuser_role_is_refused(connector, make_grant, make_role):
    n = next(_grant_ids)
    root = make_role(f"root_{n}", "SUPERUSER")
    ops = make_role(f"ops_{n}", member_of=[make_role(f"middle_{n}", member_of=[root])])
    grant = make_grant(["app_readonly", ops])

    with pytest.raises(
        ConnectorError,
        match=f"scope role {ops} reaches {root} through membership"
        f" \\({ops} -> middle_{n} -> {root}\\), which is a superuser",
    ) as info:
        connector.provision(grant)

    assert info.value.permanent
    assert not connector.is_present(grant)


@pytest.mark.parametrize(
    "attribute, why",
    [
        ("CREATEROLE", "has CREATEROLE"),
        ("CREATEDB", "has CREATEDB"),
        ("BYPASSRLS", "has BYPASSRLS"),
        ("REPLICATION", "has REPLICATION"),
    ],
)
def test_a_scope_role_reaching_an_administrative_attribute_is_refused(connector, make_grant, make_role, attribute, why):
    n = next(_grant_ids)
    admin_like = make_role(f"admin_like_{n}", attribute)
    grant = make_grant([make_role(f"team_{n}", member_of=[admin_like])])

    with pytest.raises(ConnectorError, match=why):
        connector.validate_scope(grant.scope)


def test_a_scope_reaching_a_dangerous_built_in_through_a_group_is_refused(connector, make_grant, make_role):
    n = next(_grant_ids)
    team = make_role(f"loaders_{n}", member_of=["pg_read_server_files"])
    grant = make_grant(["app_readonly"], owner_role=team)

    with pytest.raises(ConnectorError, match=f"owner role {team} reaches pg_read_server_files through membership"):
        connector.provision(grant)


def test_monitoring_built_ins_and_ordinary_groups_are_allowed(connector, make_grant):
    grant = make_grant(["app_readwrite", "pg_monitor"], owner_role="app_owner")

    connector.validate_scope(grant.scope)
    creds = connector.provision(grant).credentials

    with _login(creds) as conn:
        assert conn.execute("SELECT count(*) > 0 FROM pg_stat_activity").fetchone()[0]


def test_check_warns_when_public_may_create_in_a_schema(connector, public_may_create):
    warnings = connector.check()

    assert len(warnings) == 1
    assert "PUBLIC has CREATE on schema public of database appdb" in warnings[0]
    assert "REVOKE CREATE ON SCHEMA public FROM PUBLIC" in warnings[0]


def test_a_missing_owner_role_keeps_that_users_tables_and_does_not_hold_up_the_others(
    connector, make_grant, admin, make_role
):
    n = next(_grant_ids)
    keeper = make_role(f"keeper_{n}")
    writer = make_grant(["app_readwrite"], owner_role=keeper)
    reader = make_grant(["app_readonly"])
    table = f"precious_{writer.pk}"
    with _login(connector.provision(writer).credentials) as conn:
        conn.execute(sql.SQL("CREATE TABLE public.{} (id int)").format(sql.Identifier(table)))
    connector.provision(reader)
    admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(keeper)))

    errors = connector.revoke_many([writer, reader])

    assert list(errors) == [writer.pk] and f"Owner role '{keeper}' does not exist" in errors[writer.pk]
    assert connector.present_many([writer, reader]) == {writer.pk}
    assert admin.execute("SELECT to_regclass(%s) IS NOT NULL", [f"public.{table}"]).fetchone()[0]

    make_role(keeper)
    assert connector.revoke_many([writer]) == {}
    assert admin.execute("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = %s", [table]).fetchone() == (
        keeper,
    )
    admin.execute(sql.SQL("DROP TABLE public.{}").format(sql.Identifier(table)))


def test_a_table_in_a_schema_only_the_group_may_use_is_cleaned_up_after_the_membership_is_gone(
    connector, make_grant, admin
):
    grant = make_grant(["app_readwrite"], owner_role="app_owner")
    schema = f"team_{grant.pk}"
    admin.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION app_owner").format(sql.Identifier(schema)))
    admin.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO app_readwrite").format(sql.Identifier(schema)))
    try:
        with _login(connector.provision(grant).credentials) as conn:
            conn.execute(sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(schema, "shared")))
            conn.execute(sql.SQL("GRANT SELECT ON {} TO PUBLIC").format(sql.Identifier(schema, "shared")))

        connector.revoke(grant)

        acl = admin.execute(
            "SELECT relacl::text[] FROM pg_class WHERE oid = %s::regclass", [f"{schema}.shared"]
        ).fetchone()[0]
        assert acl == ["app_owner=arwdDxt/app_owner"]
    finally:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_a_scope_naming_another_grants_account_is_refused(connector, make_grant):
    other = connector.provision(make_grant()).external_ref

    with pytest.raises(ConnectorError, match=f"scope role {other} is another grant's account"):
        connector.validate_scope({"roles": ["app_readonly", other]})
