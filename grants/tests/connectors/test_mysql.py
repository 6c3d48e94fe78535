"""MySQLConnector against the machine's real MariaDB server.

The connector has no dependency on the portal's database: grants and targets
are plain namespaces here, except in the one test that goes through the
lifecycle to the audit trail and the drift findings.
"""

import datetime
import itertools
import os
import re
import shlex
import subprocess
import threading
import time
from types import SimpleNamespace

import pymysql
import pytest

from audit.models import AuditEvent
from grants import lifecycle
from grants.connectors.base import ConnectorError
from grants.connectors.mysql import MySQLConnector
from grants.connectors.mysql.connector import mysql_native_password_hash
from grants.models import AccessProfile, DriftFinding, Target

from ..conftest import JUSTIFICATION
from . import mariadb_support as db

SECRET_ENV = "JIT_TEST_MYSQL_ADMIN_URL"
# Account names jit_g7300001...: a range nothing else on the server uses,
# dropped before and after the module.
_grant_ids = itertools.count(7_300_001)
OUR_ACCOUNTS = re.compile(r"jit_g73[0-9]{5}")
# Accounts of grants made through the lifecycle (ids from the test database).
LIFECYCLE_PREFIX = "jit_test_"
LIFECYCLE_ACCOUNTS = re.compile(LIFECYCLE_PREFIX + r"g[0-9]+")
LOOKALIKES = ["jit_gadmin", "other_user", "jitxg7", "jit_g12x"]


def _in(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)


def _login(credentials: dict, **extra) -> pymysql.connections.Connection:
    return pymysql.connect(
        host=credentials["host"],
        port=int(credentials["port"]),
        user=credentials["username"],
        password=credentials["password"],
        database=credentials["database"] or None,
        autocommit=True,
        connect_timeout=5,
        **extra,
    )


def _query(conn, statement, args=None):
    return db.query(conn, statement, args)


@pytest.fixture(scope="module")
def root():
    """A superuser connection to the server, with the demo database and roles set up for the module."""
    try:
        conn = db.connect()
    except pymysql.MySQLError as exc:
        pytest.fail(f"MariaDB is not reachable at {db.root_url()} ({exc}); set {db.ROOT_URL_ENV} or start the server.")
    leftovers = re.compile("|".join([OUR_ACCOUNTS.pattern, LIFECYCLE_ACCOUNTS.pattern, *map(re.escape, LOOKALIKES)]))
    db.drop_accounts(conn, leftovers)
    db.set_up_demo(conn)
    try:
        yield conn
    finally:
        db.drop_accounts(conn, leftovers)
        db.tear_down_demo(conn)
        conn.close()


@pytest.fixture(autouse=True)
def demo_orders(root):
    """Give every test the three demo orders, whatever the previous one inserted."""
    yield
    db.execute(root, f"DELETE FROM `{db.DATABASE}`.orders WHERE id > 3")


def _target(url: str, monkeypatch, **config) -> SimpleNamespace:
    monkeypatch.setenv(SECRET_ENV, url)
    params = db.url_params(db.root_url())
    config = {"host": params["host"], "port": params["port"], "database": db.DATABASE, **config}
    return SimpleNamespace(name="demo-mysql", kind="mysql", config=config, secret_env=SECRET_ENV)


@pytest.fixture
def target(root, monkeypatch):
    return _target(db.root_url(), monkeypatch)


@pytest.fixture
def connector(target):
    with MySQLConnector(target) as c:
        yield c


@pytest.fixture
def make_grant(connector):
    """Build grants with fresh ids; revoke whatever they left behind after the test."""
    made = []

    def make(roles=(db.READER,), *, privileges=None, seconds=600, **scope):
        scope = {"roles": list(roles), **scope}
        if privileges is not None:
            scope["privileges"] = privileges
        grant = SimpleNamespace(pk=next(_grant_ids), expires_at=_in(seconds), scope=scope)
        made.append(grant)
        return grant

    yield make
    for grant in made:
        connector.revoke(grant)


@pytest.fixture
def make_admin(root, monkeypatch):
    """Create jit_test_admin with the given grants (the README's SQL); return a target that uses it."""

    def make(*grants):
        db.drop_accounts(root, re.compile(db.TEST_ADMIN))
        password = "Adm1n-" + os.urandom(6).hex()
        account = f"'{db.TEST_ADMIN}'@'127.0.0.1'"
        db.execute(root, f"CREATE USER {account} IDENTIFIED BY '{password}'")
        db.execute(root, *(g.replace("{admin}", account) for g in grants))
        params = db.url_params(db.root_url())
        return _target(f"mysql://{db.TEST_ADMIN}:{password}@127.0.0.1:{params['port']}/", monkeypatch)

    yield make
    db.drop_accounts(root, re.compile(db.TEST_ADMIN))


README_ADMIN_GRANTS = [
    "GRANT CREATE USER, PROCESS, CONNECTION ADMIN ON *.* TO {admin}",
    *(
        f"GRANT SELECT ON mysql.{table} TO {{admin}}"
        for table in (
            "user",
            "roles_mapping",
            "global_priv",
            "db",
            "tables_priv",
            "columns_priv",
            "procs_priv",
            "proxies_priv",
        )
    ),
]
README_ROLE_GRANTS = [
    f"GRANT {db.READER} TO {{admin}} WITH ADMIN OPTION",
    "GRANT UPDATE ON mysql.* TO {admin}",
]
README_PRIVILEGE_GRANTS = [r"GRANT SELECT, INSERT ON `jit\_test\_appdb`.* TO {admin} WITH GRANT OPTION"]


def _count(conn) -> int:
    return _query(conn, "SELECT COUNT(*) FROM orders")[0][0]


def _roles_of(root, user):
    return sorted(role for (role,) in _query(root, "SELECT Role FROM mysql.roles_mapping WHERE User = %s", [user]))


# -- provisioning -------------------------------------------------------------


def test_issued_credentials_log_in_with_the_role_active_and_read_orders(connector, make_grant):
    grant = make_grant([db.READER])
    result = connector.provision(grant)

    assert result.external_ref == f"jit_g{grant.pk}"
    assert result.expires_at == grant.expires_at
    creds = result.credentials
    assert creds["username"] == result.external_ref
    assert (creds["host"], creds["port"], creds["database"]) == ("127.0.0.1", "3306", db.DATABASE)
    assert creds["dsn"] == f"mysql://{creds['username']}:{creds['password']}@127.0.0.1:3306/{db.DATABASE}"
    with _login(creds) as conn:
        assert _query(conn, "SELECT CURRENT_USER(), CURRENT_ROLE()") == [(f"{creds['username']}@%", db.READER)]
        assert _count(conn) == 3


def test_the_command_line_logs_in_with_the_password_given_separately(connector, make_grant):
    creds = connector.provision(make_grant()).credentials

    argv = shlex.split(creds["command"])
    assert argv == ["mariadb", "-h", "127.0.0.1", "-P", "3306", "-u", creds["username"], "-p", db.DATABASE]
    assert creds["password"] not in creds["command"]
    # -p alone prompts on a terminal; the client reads MYSQL_PWD instead.
    argv.remove("-p")
    out = subprocess.run(
        [*argv, "-N", "-e", "SELECT COUNT(*) FROM orders"],
        env={**os.environ, "MYSQL_PWD": creds["password"]},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (out.returncode, out.stdout.strip()) == (0, "3"), out.stderr


def test_write_outside_the_profile_is_refused(connector, make_grant):
    creds = connector.provision(make_grant([db.READER])).credentials

    with _login(creds) as conn:
        with pytest.raises(pymysql.MySQLError) as info:
            _query(conn, "INSERT INTO orders (customer, amount) VALUES ('Mallory', 1)")
        assert info.value.args[0] == 1142  # INSERT command denied
        with pytest.raises(pymysql.MySQLError):
            _query(conn, "CREATE TABLE sneaky (id INT)")


def test_server_stores_only_the_password_hash(connector, make_grant, root):
    creds = connector.provision(make_grant()).credentials

    stored = _query(root, "SELECT authentication_string FROM mysql.user WHERE User = %s", [creds["username"]])
    assert stored == [(mysql_native_password_hash(creds["password"]),)]


def test_native_password_hash_matches_the_servers_own():
    assert mysql_native_password_hash("pencil") == "*7614BE58636C810A9D8970A50B3B2A78450413E4"


def test_provisioning_twice_gives_one_user_and_only_the_latest_password_works(connector, make_grant, root):
    grant = make_grant()
    first = connector.provision(grant).credentials
    second = connector.provision(grant).credentials

    assert first["password"] != second["password"]
    assert _query(root, "SELECT COUNT(*) FROM mysql.user WHERE User = %s", [second["username"]]) == [(1,)]
    with pytest.raises(pymysql.MySQLError) as info:
        _login(first)
    assert info.value.args[0] == 1045  # access denied
    with _login(second) as conn:
        assert _count(conn) == 3


def test_reprovisioning_replaces_roles_outside_the_scope(connector, make_grant, root):
    grant = make_grant([db.WRITER])
    creds = connector.provision(grant).credentials
    with _login(creds) as conn:
        _query(conn, "INSERT INTO orders (customer, amount) VALUES ('Writer', 1)")

    grant.scope["roles"] = [db.READER]
    creds = connector.provision(grant).credentials

    assert _roles_of(root, creds["username"]) == [db.READER]
    with _login(creds) as conn:
        assert _query(conn, "SELECT CURRENT_ROLE()") == [(db.READER,)]
        with pytest.raises(pymysql.MySQLError):
            _query(conn, "INSERT INTO orders (customer, amount) VALUES ('Writer', 2)")


def test_privileges_scope_without_roles_works_and_is_reconciled(connector, make_grant, root):
    grant = make_grant(
        [],
        privileges=[
            {"privileges": "SELECT", "on": f"{db.DATABASE}.orders"},
            {"privileges": "insert ,  select", "on": f"{db.DATABASE}.*"},
        ],
    )
    creds = connector.provision(grant).credentials
    with _login(creds) as conn:
        assert _query(conn, "SELECT CURRENT_ROLE()") == [(None,)]
        _query(conn, "INSERT INTO orders (customer, amount) VALUES ('Direct', 5)")
        assert _count(conn) == 4

    grant.scope["privileges"] = [{"privileges": "SELECT", "on": f"{db.DATABASE}.orders"}]
    creds = connector.provision(grant).credentials

    with _login(creds) as conn:
        assert _count(conn) == 4
        with pytest.raises(pymysql.MySQLError):
            _query(conn, "INSERT INTO orders (customer, amount) VALUES ('Direct', 6)")
    assert _roles_of(root, creds["username"]) == []


def test_database_level_privileges_do_not_leak_through_the_underscore_wildcard(connector, make_grant):
    # In `jit_test_appdb`.* the "_" would match any character, "-" included.
    grant = make_grant([], privileges=[{"privileges": "SELECT", "on": f"{db.DATABASE}.*"}])
    creds = connector.provision(grant).credentials

    with _login(creds) as conn:
        assert _count(conn) == 3
        with pytest.raises(pymysql.MySQLError) as info:
            _query(conn, f"SELECT COUNT(*) FROM `{db.LOOKALIKE_DATABASE}`.orders")
        assert info.value.args[0] == 1142


def test_max_user_connections_limits_concurrent_sessions(connector, make_grant):
    creds = connector.provision(make_grant(max_user_connections=1)).credentials

    with _login(creds):
        with pytest.raises(pymysql.MySQLError) as info:
            _login(creds)
    assert info.value.args[0] == 1226  # exceeded max_user_connections


# -- revocation ---------------------------------------------------------------


def test_revoke_refuses_new_logins_and_ends_open_sessions(connector, make_grant):
    grant = make_grant()
    creds = connector.provision(grant).credentials
    session = _login(creds)
    assert _count(session) == 3

    connector.revoke(grant)

    with pytest.raises(pymysql.MySQLError):
        _query(session, "SELECT 1")
    session.close()
    with pytest.raises(pymysql.MySQLError):
        _login(creds)
    assert not connector.is_present(grant)


def test_revoke_ends_a_session_in_the_middle_of_a_long_query(connector, make_grant):
    grant = make_grant()
    session = _login(connector.provision(grant).credentials)
    outcome = {}

    def long_query():
        try:
            outcome["rows"] = _query(session, "SELECT SLEEP(30)")
        except pymysql.MySQLError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=long_query)
    worker.start()
    time.sleep(0.3)
    started = time.monotonic()

    connector.revoke(grant)

    worker.join(timeout=10)
    assert time.monotonic() - started < 10
    assert "error" in outcome, outcome
    session.close()
    assert not connector.is_present(grant)


def test_a_session_outlives_drop_user_until_revoke_kills_it(connector, make_grant, root):
    # MariaDB lets a connected user run on after DROP USER: the reason revoke
    # kills before it drops, and is_present looks at the process list too.
    grant = make_grant()
    creds = connector.provision(grant).credentials
    session = _login(creds)
    db.execute(root, f"DROP USER '{creds['username']}'@'%'")

    assert _count(session) == 3
    assert connector.is_present(grant)
    assert creds["username"] in connector.list_managed()

    connector.revoke(grant)

    with pytest.raises(pymysql.MySQLError):
        _query(session, "SELECT 1")
    session.close()
    assert not connector.is_present(grant)


def test_revoking_twice_or_revoking_what_never_existed_succeeds(connector, make_grant):
    grant = make_grant()
    connector.provision(grant)

    connector.revoke(grant)
    connector.revoke(grant)
    connector.revoke(make_grant())

    assert not connector.is_present(grant)


def test_is_present_while_the_user_exists(connector, make_grant):
    grant = make_grant()
    assert not connector.is_present(grant)

    connector.provision(grant)

    assert connector.is_present(grant)


def test_extend_keeps_the_account_and_its_password(connector, make_grant):
    grant = make_grant()
    creds = connector.provision(grant).credentials

    grant.expires_at = _in(3600)
    connector.extend(grant)

    with _login(creds) as conn:
        assert _count(conn) == 3
    connector.revoke(grant)
    with pytest.raises(ConnectorError) as info:
        connector.extend(grant)
    assert info.value.permanent


def test_list_managed_lists_grant_users_and_nothing_else(connector, make_grant, root):
    user = connector.provision(make_grant()).external_ref
    # Look-alikes a careless LIKE 'jit_g%' would match ('_' is a wildcard).
    for name in LOOKALIKES:
        db.execute(root, f"CREATE USER '{name}'@'%' ACCOUNT LOCK")
    try:
        managed = connector.list_managed()
    finally:
        db.drop_accounts(root, re.compile("|".join(map(re.escape, LOOKALIKES))))

    assert user in managed
    assert all(re.fullmatch(r"jit_g[0-9]+", name) for name in managed)
    assert not managed & {"root", db.READER, *LOOKALIKES}


# -- scope validation ---------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        {"privileges": "SELECT", "on": "*.*"},
        {"privileges": "SELECT", "on": "jit_test_appdb"},
        {"privileges": "SELECT", "on": "jit_test_appdb.orders.id"},
        {"privileges": "SELECT", "on": "`jit_test_appdb`.*"},
        {"privileges": "SELECT", "on": "jit_test_appdb.* TO x; DROP DATABASE jit_test_appdb; --"},
        {"privileges": "SELECT", "on": "jit-test-appdb.*"},
        {"privileges": "SELECT", "on": "mysql.*"},
        {"privileges": "SELECT", "on": "MySQL.user"},
        {"privileges": "ALL", "on": "jit_test_appdb.*"},
        {"privileges": "ALL PRIVILEGES", "on": "jit_test_appdb.*"},
        {"privileges": "SELECT, GRANT OPTION", "on": "jit_test_appdb.*"},
        {"privileges": "SUPER", "on": "jit_test_appdb.*"},
        {"privileges": "FILE", "on": "jit_test_appdb.*"},
        {"privileges": "ALTER ROUTINE", "on": "jit_test_appdb.*"},
        {"privileges": "SELECT ON *.* TO x; --", "on": "jit_test_appdb.*"},
        {"privileges": "SELECT (id)", "on": "jit_test_appdb.orders"},
        {"privileges": "EXECUTE", "on": "jit_test_appdb.orders"},
        {"privileges": "SELECT,", "on": "jit_test_appdb.*"},
        {"privileges": ["SELECT"], "on": "jit_test_appdb.*"},
        {"privileges": "SELECT", "on": "jit_test_appdb.*", "with": "GRANT OPTION"},
    ],
)
def test_bad_privileges_entry_is_a_permanent_error_and_creates_nothing(connector, make_grant, entry):
    grant = make_grant([], privileges=[entry])

    with pytest.raises(ConnectorError) as info:
        connector.provision(grant)

    assert info.value.permanent
    assert not connector.is_present(grant)


def test_unknown_role_is_a_permanent_error_and_creates_nothing(connector, make_grant):
    grant = make_grant(["no_such_role"])

    with pytest.raises(ConnectorError, match="no_such_role") as info:
        connector.provision(grant)

    assert info.value.permanent
    assert not connector.is_present(grant)


def test_a_role_with_global_admin_privileges_is_refused(connector, make_grant):
    grant = make_grant([db.DBA])

    with pytest.raises(ConnectorError, match=db.DBA) as info:
        connector.provision(grant)

    assert info.value.permanent
    assert not connector.is_present(grant)


def test_more_than_one_role_is_refused_on_mariadb(connector, make_grant):
    # MariaDB's SET DEFAULT ROLE takes one role: a second would be granted but inactive.
    with pytest.raises(ConnectorError, match="one role") as info:
        connector.provision(make_grant([db.READER, db.WRITER]))

    assert info.value.permanent


def test_empty_scope_is_a_permanent_error(connector, make_grant):
    with pytest.raises(ConnectorError, match="neither") as info:
        connector.provision(make_grant([]))

    assert info.value.permanent


# -- check and the admin account ----------------------------------------------


def test_check_passes_on_the_real_server(connector):
    assert connector.check() == []


def test_check_warns_about_an_anonymous_account(connector, root):
    # 10.255.255.1 is no address of this machine: the account changes no real login.
    db.execute(root, "CREATE USER ''@'10.255.255.1' ACCOUNT LOCK")
    try:
        warnings = connector.check()
    finally:
        db.execute(root, "DROP USER ''@'10.255.255.1'")

    assert len(warnings) == 1
    assert "Anonymous" in warnings[0] and "10.255.255.1" in warnings[0]


def test_check_raises_a_clear_error_for_an_unreachable_port(root, monkeypatch):
    target = _target("mysql://root:S3cret-Pw@127.0.0.1:1/", monkeypatch)

    with MySQLConnector(target) as connector, pytest.raises(ConnectorError) as info:
        connector.check()

    assert not info.value.permanent
    assert "demo-mysql" in info.value.message and "127.0.0.1:1" in info.value.message
    assert "S3cret-Pw" not in info.value.message


def test_wrong_admin_password_is_reported_without_echoing_it(root, monkeypatch):
    params = db.url_params(db.root_url())
    target = _target(f"mysql://{params['user']}:WrongPassword123@{params['host']}:{params['port']}/", monkeypatch)

    with MySQLConnector(target) as connector, pytest.raises(ConnectorError, match="Access denied") as info:
        connector.check()

    assert "WrongPassword123" not in info.value.message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://root:Pw-Secret1@127.0.0.1:3306/",
        "mysql://root:Pw-Secret1@127.0.0.1:port/",
        "mysql://root:Pw-Secret1@127.0.0.1:3306/appdb?ssl=1",
    ],
)
def test_malformed_admin_url_is_a_permanent_error_without_the_password(root, monkeypatch, url):
    with MySQLConnector(_target(url, monkeypatch)) as connector, pytest.raises(ConnectorError) as info:
        connector.check()

    assert info.value.permanent
    assert "Pw-Secret1" not in info.value.message


def test_the_readme_admin_account_can_provision_and_revoke_both_kinds_of_scope(make_admin, root):
    target = make_admin(*README_ADMIN_GRANTS, *README_ROLE_GRANTS, *README_PRIVILEGE_GRANTS)
    by_role = SimpleNamespace(pk=next(_grant_ids), expires_at=_in(600), scope={"roles": [db.READER]})
    by_privilege = SimpleNamespace(
        pk=next(_grant_ids),
        expires_at=_in(600),
        scope={"privileges": [{"privileges": "SELECT", "on": f"{db.DATABASE}.*"}]},
    )

    with MySQLConnector(target) as connector:
        assert connector.check() == []
        sessions = []
        for grant in (by_role, by_privilege):
            creds = connector.provision(grant).credentials
            sessions.append(_login(creds))
            assert _count(sessions[-1]) == 3
        for grant, session in zip((by_role, by_privilege), sessions):
            connector.revoke(grant)
            with pytest.raises(pymysql.MySQLError):
                _query(session, "SELECT 1")
            session.close()
            assert not connector.is_present(grant)


def test_without_update_on_mysql_check_warns_and_only_privilege_scopes_work(make_admin):
    target = make_admin(
        *README_ADMIN_GRANTS, f"GRANT {db.READER} TO {{admin}} WITH ADMIN OPTION", *README_PRIVILEGE_GRANTS
    )
    by_role = SimpleNamespace(pk=next(_grant_ids), expires_at=_in(600), scope={"roles": [db.READER]})
    by_privilege = SimpleNamespace(
        pk=next(_grant_ids),
        expires_at=_in(600),
        scope={"privileges": [{"privileges": "SELECT", "on": f"{db.DATABASE}.*"}]},
    )

    with MySQLConnector(target) as connector:
        warnings = connector.check()
        assert len(warnings) == 1 and "UPDATE on mysql.*" in warnings[0]
        try:
            with _login(connector.provision(by_privilege).credentials) as conn:
                assert _count(conn) == 3
            with pytest.raises(ConnectorError) as info:
                connector.provision(by_role)
            assert info.value.permanent
        finally:
            connector.revoke(by_privilege)
            connector.revoke(by_role)


def test_an_admin_that_cannot_see_other_sessions_is_refused(make_admin):
    # Without PROCESS the process list shows only the admin's own connections,
    # so revoke would find no session to kill and report success.
    target = make_admin(
        "GRANT CREATE USER, CONNECTION ADMIN ON *.* TO {admin}", "GRANT SELECT ON mysql.user TO {admin}"
    )

    with MySQLConnector(target) as connector, pytest.raises(ConnectorError, match="PROCESS") as info:
        connector.check()

    assert info.value.permanent


# -- what a grant user made, and what its roles reach (issue 11, findings 1 and 7) ------------------


OBJECT_PRIVILEGES = "SELECT, INSERT, CREATE VIEW, CREATE ROUTINE, TRIGGER, EVENT"


def _make_objects(creds: dict, tag: str) -> set[tuple[str, str]]:
    """Log in as a grant user and make a view, routine, trigger and event of each kind; return (kind, name) of each."""
    made = {
        ("view", f"{tag}_definer_view"): f"CREATE SQL SECURITY DEFINER VIEW {tag}_definer_view AS SELECT * FROM orders",
        ("view", f"{tag}_invoker_view"): f"CREATE SQL SECURITY INVOKER VIEW {tag}_invoker_view AS SELECT * FROM orders",
        ("procedure", f"{tag}_proc"): f"CREATE PROCEDURE {tag}_proc() SQL SECURITY DEFINER SELECT COUNT(*) FROM orders",
        (
            "function",
            f"{tag}_func",
        ): f"CREATE FUNCTION {tag}_func() RETURNS INT READS SQL DATA RETURN (SELECT COUNT(*) FROM orders)",
        (
            "trigger",
            f"{tag}_trigger on orders",
        ): f"CREATE TRIGGER {tag}_trigger BEFORE INSERT ON orders FOR EACH ROW SET NEW.amount = NEW.amount",
        # The shared server's event scheduler is off: the event is made, it never runs.
        ("event", f"{tag}_event"): f"CREATE EVENT {tag}_event ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM orders",
    }
    # A package (MariaDB's Oracle mode) is a routine too, with a body apart.
    packages = {("package", f"{tag}_pkg"), ("package body", f"{tag}_pkg")}
    with _login(creds) as conn:
        for statement in made.values():
            _query(conn, statement)
        _query(conn, "SET SESSION sql_mode = 'ORACLE'")
        _query(conn, f"CREATE PACKAGE {tag}_pkg AS FUNCTION total RETURN INT; END")
        _query(conn, f"CREATE PACKAGE BODY {tag}_pkg AS FUNCTION total RETURN INT AS BEGIN RETURN 1; END; END")
    return set(made) | packages


def _defined_by(root, user: str) -> list[tuple]:
    """Everything on the server whose DEFINER is `user`, read as root."""
    return [
        row
        for kind, sql in [
            ("view", "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE DEFINER LIKE %s"),
            ("routine", "SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE DEFINER LIKE %s"),
            ("trigger", "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE DEFINER LIKE %s"),
            ("event", "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE DEFINER LIKE %s"),
        ]
        for row in [(kind, name) for (name,) in _query(root, sql, [user.replace("_", "\\_") + "@%"])]
    ]


@pytest.fixture
def code_allowed(root):
    # With a binary log, a user without SUPER may create functions and triggers
    # only under log_bin_trust_function_creators, a global we must not change.
    (log_bin,) = _query(root, "SELECT @@log_bin")[0]
    assert not log_bin, "these tests expect the shared MariaDB without a binary log (@@log_bin = 0)"


def test_views_routines_triggers_and_events_a_grant_user_made_are_dropped_at_revocation(
    connector, make_grant, root, code_allowed
):
    scope = [{"privileges": OBJECT_PRIVILEGES, "on": f"{db.DATABASE}.*"}]
    first, second = make_grant([], privileges=scope), make_grant([], privileges=scope)
    made = {g.pk: _make_objects(connector.provision(g).credentials, f"g{g.pk}") for g in (first, second)}

    assert connector.revoke_many([first, second]) == {}

    for grant in (first, second):
        assert _defined_by(root, connector.user_name(grant)) == []
        inventory = connector.take_inventory(grant.pk)
        assert {(item["kind"], item["name"]) for item in inventory} == made[grant.pk]
        assert {(item["database"], item["action"]) for item in inventory} == {(db.DATABASE, "dropped")}
    # The trigger went with its account: writes to the table work again.
    db.execute(root, f"INSERT INTO `{db.DATABASE}`.orders (customer, amount) VALUES ('After', 1)")


def test_revoking_again_finds_nothing_more(connector, make_grant, code_allowed):
    grant = make_grant([], privileges=[{"privileges": OBJECT_PRIVILEGES, "on": f"{db.DATABASE}.*"}])
    _make_objects(connector.provision(grant).credentials, f"g{grant.pk}")
    connector.revoke(grant)
    connector.take_inventory(grant.pk)

    connector.revoke(grant)

    assert connector.take_inventory(grant.pk) == []


README_CLEANUP_GRANTS = [
    rf"GRANT {OBJECT_PRIVILEGES} ON `jit\_test\_appdb`.* TO {{admin}} WITH GRANT OPTION",
    r"GRANT DROP, ALTER ROUTINE, TRIGGER, EVENT ON `jit\_test\_appdb`.* TO {admin}",
]


def test_the_readme_admin_account_finds_and_drops_what_a_grant_user_made(make_admin, root, code_allowed):
    target = make_admin(*README_ADMIN_GRANTS, *README_ROLE_GRANTS, *README_CLEANUP_GRANTS)
    grant = SimpleNamespace(
        pk=next(_grant_ids),
        expires_at=_in(600),
        scope={"privileges": [{"privileges": OBJECT_PRIVILEGES, "on": f"{db.DATABASE}.*"}]},
    )

    with MySQLConnector(target) as connector:
        assert connector.check() == []
        made = _make_objects(connector.provision(grant).credentials, f"g{grant.pk}")
        connector.revoke(grant)

        assert {(item["kind"], item["name"], item["action"]) for item in connector.take_inventory(grant.pk)} == {
            (kind, name, "dropped") for kind, name in made
        }
    assert _defined_by(root, f"jit_g{grant.pk}") == []


def test_a_scope_that_lets_users_create_code_the_admin_cannot_drop_is_refused(make_admin):
    # The admin may hand out CREATE VIEW and CREATE ROUTINE, but without DROP
    # and ALTER ROUTINE it could neither see nor drop what a user made (to hand
    # out TRIGGER it holds TRIGGER, which is enough for triggers).
    target = make_admin(*README_ADMIN_GRANTS, README_CLEANUP_GRANTS[0])
    entry = {"privileges": "SELECT, CREATE VIEW, CREATE ROUTINE, TRIGGER", "on": f"{db.DATABASE}.*"}
    grant = SimpleNamespace(pk=next(_grant_ids), expires_at=_in(600), scope={"privileges": [entry]})

    with MySQLConnector(target) as connector:
        with pytest.raises(ConnectorError) as info:
            connector.provision(grant)
        assert info.value.permanent
        message = info.value.message
        assert "DROP on `jit\\_test\\_appdb`.*, which it needs to find and drop the views" in message
        assert "ALTER ROUTINE on `jit\\_test\\_appdb`.*, which it needs to find and drop the routines" in message
        assert "TRIGGER on" not in message
        assert not connector.is_present(grant)
        with pytest.raises(ConnectorError, match="lacks ALTER ROUTINE"):
            connector.validate_scope(grant.scope)


def test_an_object_the_admin_may_see_but_not_drop_is_reported_and_the_account_still_goes(
    make_admin, connector, make_grant, root, code_allowed
):
    grant = make_grant([], privileges=[{"privileges": "SELECT, CREATE VIEW", "on": f"{db.DATABASE}.*"}])
    with _login(connector.provision(grant).credentials) as conn:
        _query(conn, "CREATE VIEW leftover AS SELECT * FROM orders")
    # SELECT shows the admin the view; only DROP would let it remove it.
    target = make_admin(*README_ADMIN_GRANTS, r"GRANT SELECT ON `jit\_test\_appdb`.* TO {admin}")
    try:
        with MySQLConnector(target) as weak:
            weak.revoke(grant)
            assert not weak.is_present(grant)
            [item] = weak.take_inventory(grant.pk)
        assert (item["kind"], item["name"]) == ("view", "leftover")
        assert item["action"].startswith("reported: not dropped") and "DROP command denied" in item["action"]
    finally:
        db.execute(root, f"DROP VIEW IF EXISTS `{db.DATABASE}`.leftover")


@pytest.fixture
def scope_roles(root):
    """Build jit_test_outer -> jit_test_middle -> jit_test_inner from the statements given; drop them after."""

    def build(*statements):
        for role in db.SCRATCH_ROLES:
            db.execute(root, f"DROP ROLE IF EXISTS {role}")
        db.execute(
            root,
            *(f"CREATE ROLE {role}" for role in db.SCRATCH_ROLES),
            "GRANT jit_test_middle TO jit_test_outer",
            "GRANT jit_test_inner TO jit_test_middle",
            r"GRANT SELECT ON `jit\_test\_appdb`.* TO jit_test_outer",
            *statements,
        )

    yield build
    for role in db.SCRATCH_ROLES:
        db.execute(root, f"DROP ROLE IF EXISTS {role}")


@pytest.mark.parametrize(
    ("statements", "reason"),
    [
        ([f"GRANT {db.DBA} TO jit_test_inner"], f"outer -> jit_test_middle -> jit_test_inner -> {db.DBA} holds global"),
        # 10.5+ privileges live only in mysql.global_priv, not in mysql.user's columns.
        (["GRANT BINLOG ADMIN, SET USER ON *.* TO jit_test_inner"], "holds global privileges (BINLOG ADMIN, SET USER)"),
        (["GRANT SELECT ON *.* TO jit_test_inner"], "holds global privileges (SELECT)"),
        (["GRANT SELECT ON mysql.* TO jit_test_inner"], "covers a system schema"),
        (["GRANT SELECT ON `%`.* TO jit_test_inner"], "covers a system schema"),
        (["GRANT UPDATE (Password) ON mysql.user TO jit_test_inner"], "covers a system schema"),
        ([r"GRANT SELECT ON `jit\_test\_appdb`.* TO jit_test_inner WITH GRANT OPTION"], "holds GRANT OPTION"),
        ([r"GRANT ALTER ROUTINE ON `jit\_test\_appdb`.* TO jit_test_inner"], "holds ALTER ROUTINE"),
        ([f"GRANT {db.READER} TO jit_test_inner WITH ADMIN OPTION"], f"holds role {db.READER} WITH ADMIN OPTION"),
    ],
)
def test_a_scope_role_reaching_admin_rights_through_other_roles_is_refused(
    connector, make_grant, scope_roles, statements, reason
):
    scope_roles(*statements)
    grant = make_grant(["jit_test_outer"])

    with pytest.raises(ConnectorError) as planned:
        connector.validate_scope(grant.scope)
    with pytest.raises(ConnectorError) as provisioned:
        connector.provision(grant)

    for info in (planned, provisioned):
        assert info.value.permanent
        assert "jit_test_outer" in info.value.message and reason in info.value.message
    assert not connector.is_present(grant)


def test_a_scope_role_with_only_database_privileges_through_its_roles_is_provisioned(
    connector, make_grant, scope_roles
):
    scope_roles(f"GRANT {db.WRITER} TO jit_test_inner")
    grant = make_grant(["jit_test_outer"])

    assert connector.validate_scope(grant.scope) == []
    with _login(connector.provision(grant).credentials) as conn:
        _query(conn, "INSERT INTO orders (customer, amount) VALUES ('Inherited', 1)")


def test_validate_scope_warns_what_a_scope_lets_users_leave_behind(connector):
    on = f"{db.DATABASE}.*"
    code = connector.validate_scope({"privileges": [{"privileges": "SELECT, CREATE ROUTINE, TRIGGER", "on": on}]})
    tables = connector.validate_scope({"privileges": [{"privileges": "SELECT, CREATE", "on": on}]})

    assert len(code) == 1 and "routines, triggers in `jit\\_test\\_appdb`.*" in code[0]
    assert "revocation drops them" in code[0]
    assert len(tables) == 1 and "tables have no owner" in tables[0]


@pytest.mark.parametrize(
    ("statements", "privileges"),
    [
        ([r"GRANT CREATE ROUTINE ON `jit\_test\_appdb`.* TO jit_test_inner"], None),
        ([], [{"privileges": "SELECT, TRIGGER", "on": f"{db.DATABASE}.orders"}]),
    ],
)
def test_a_role_scope_that_lets_users_create_code_is_refused_on_mariadb(
    connector, make_grant, scope_roles, statements, privileges
):
    # With the role active, MariaDB lets the user write DEFINER = CURRENT_ROLE
    # without SUPER: the code would belong to the role and outlive the grant.
    scope_roles(*statements)
    grant = make_grant(["jit_test_outer"], privileges=privileges)

    for attempt in (connector.validate_scope, lambda scope: connector.provision(grant)):
        with pytest.raises(ConnectorError, match="DEFINER") as info:
            attempt(grant.scope)
        assert info.value.permanent and "jit_test_outer" in info.value.message
    assert not connector.is_present(grant)


def test_why_mariadb_code_privileges_may_not_come_with_a_role(root, scope_roles, code_allowed):
    # The server behaviour the refusal above stands on: an account whose role
    # brings TRIGGER makes the role its trigger's DEFINER, no SUPER needed, and
    # the trigger runs as the role once the account is gone. (Were TRIGGER the
    # account's own, the role's trigger would stay and fail every insert.)
    scope_roles(f"GRANT TRIGGER ON `{db.DATABASE}`.orders TO jit_test_inner")
    user, password = f"jit_g{next(_grant_ids)}", "Pw-" + os.urandom(6).hex()
    db.execute(
        root,
        f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'",
        f"GRANT jit_test_outer TO '{user}'@'%'",
        f"SET DEFAULT ROLE jit_test_outer FOR '{user}'@'%'",
    )
    try:
        creds = {"host": "127.0.0.1", "port": 3306, "username": user, "password": password, "database": db.DATABASE}
        with _login(creds) as conn:
            _query(
                conn,
                "CREATE DEFINER = CURRENT_ROLE TRIGGER role_trigger BEFORE INSERT ON orders FOR EACH ROW"
                " SET @role_trigger_saw = (SELECT COUNT(*) FROM orders)",
            )
        db.drop_accounts(root, re.compile(re.escape(user)))

        assert _query(root, "SELECT DEFINER FROM information_schema.TRIGGERS WHERE TRIGGER_NAME = 'role_trigger'") == [
            ("jit_test_outer@",)
        ]
        db.execute(root, f"INSERT INTO `{db.DATABASE}`.orders (customer, amount) VALUES ('Fires', 0)")
        assert _query(root, "SELECT @role_trigger_saw") == [(3,)]
    finally:
        db.drop_accounts(root, re.compile(re.escape(user)))
        db.execute(root, f"DROP TRIGGER IF EXISTS `{db.DATABASE}`.role_trigger")


def test_alter_routine_is_refused_because_it_can_turn_a_dbas_routine_into_sql_security_definer(connector):
    with pytest.raises(ConnectorError, match="SQL SECURITY DEFINER") as info:
        connector.validate_scope({"privileges": [{"privileges": "SELECT, ALTER ROUTINE", "on": f"{db.DATABASE}.*"}]})

    assert info.value.permanent


def test_check_warns_when_public_lets_every_account_create_code(connector, root):
    # The first grant to PUBLIC adds its row to the shared server's grant
    # tables; REVOKE leaves the row, so take it out again if it was not there.
    had_row = _query(root, "SELECT COUNT(*) FROM mysql.global_priv WHERE User = 'PUBLIC' AND Host = ''")[0][0]
    db.execute(root, r"GRANT CREATE VIEW ON `jit\_test\_appdb`.* TO PUBLIC")
    try:
        warnings = connector.check()
    finally:
        db.execute(root, r"REVOKE CREATE VIEW ON `jit\_test\_appdb`.* FROM PUBLIC")
        if not had_row:
            db.execute(root, "DELETE FROM mysql.global_priv WHERE User = 'PUBLIC' AND Host = ''", "FLUSH PRIVILEGES")

    assert any("PUBLIC holds CREATE VIEW on `jit\\_test\\_appdb`.*" in w for w in warnings), warnings
    assert any(w.startswith("Through PUBLIC: Grant users of this scope may create views") for w in warnings), warnings


@pytest.fixture
def mysql_profile(root, monkeypatch, groups):
    """A profile on the shared MariaDB whose users may create code in the demo database."""
    monkeypatch.setenv(SECRET_ENV, db.root_url())
    params = db.url_params(db.root_url())
    target = Target.objects.create(
        name="appdb-mysql",
        kind="mysql",
        secret_env=SECRET_ENV,
        config={"host": params["host"], "port": params["port"], "database": db.DATABASE, "prefix": LIFECYCLE_PREFIX},
    )
    profile = AccessProfile.objects.create(
        name="appdb-mysql-dev",
        title="appdb developer",
        target=target,
        scope={"privileges": [{"privileges": OBJECT_PRIVILEGES, "on": f"{db.DATABASE}.*"}]},
        max_duration=datetime.timedelta(hours=4),
        approver_group=groups["db-approvers"],
    )
    profile.requestable_by.add(groups["engineers"])
    yield profile
    db.drop_accounts(root, LIFECYCLE_ACCOUNTS)


def test_what_a_grant_user_made_is_listed_in_the_revocation_event_and_a_drift_finding(
    ana, otto, mysql_profile, root, code_allowed
):
    request = lifecycle.submit_request(
        requester=ana, profile=mysql_profile, duration=datetime.timedelta(hours=1), justification=JUSTIFICATION
    )
    lifecycle.approve_request(request.pk, actor=otto)
    grant = lifecycle.provision_grant(request.grant.pk)
    assert grant.status == "active", grant.last_error
    made = _make_objects(lifecycle.reveal_credentials(grant.pk, actor=ana), "lc")

    lifecycle.revoke_grant(grant.pk, actor=ana, reason="released")
    grant = lifecycle.complete_revocation(grant.pk)

    assert grant.status == "revoked"
    assert _defined_by(root, grant.external_ref) == []
    event = AuditEvent.objects.get(action="grant.revoked", object_id=str(grant.pk))
    assert {(item["kind"], item["name"], item["action"]) for item in event.details["objects"]} == {
        (kind, name, "dropped") for kind, name in made
    }
    finding = DriftFinding.objects.get(grant=grant)
    assert finding.kind == DriftFinding.Kind.OBJECTS
    assert finding.action.startswith(f"{len(made)} object(s)")
    assert f"trigger {db.DATABASE}.lc_trigger on orders dropped" in finding.action
