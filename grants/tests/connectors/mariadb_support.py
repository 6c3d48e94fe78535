"""The machine's MariaDB server as a connector target for tests: a demo database, roles, clean-up.

The server is shared with whatever else runs here, so everything these
helpers create is named jit_test_* (or a grant account in the range the
tests use) and is dropped before and after the tests.
"""

import os
import re
from urllib.parse import unquote, urlsplit

import pymysql

# Superuser URL of the test server; the default is the local server's root.
ROOT_URL_ENV = "JIT_TEST_MYSQL_ROOT_URL"
DEFAULT_ROOT_URL = "mysql://root@127.0.0.1:3306/"

DATABASE = "jit_test_appdb"
# Matched by the database-level pattern `jit_test_appdb`.* unless "_" is escaped.
LOOKALIKE_DATABASE = "jit-test-appdb"
READER = "jit_test_reader"  # SELECT on jit_test_appdb.*
WRITER = "jit_test_writer"  # SELECT, INSERT on jit_test_appdb.*
DBA = "jit_test_dba"  # ALL PRIVILEGES on *.*: a role the connector must refuse to hand out
# Roles a test builds for itself (scope_roles in test_mysql.py); dropped here too.
SCRATCH_ROLES = ("jit_test_outer", "jit_test_middle", "jit_test_inner")
ROLES = (READER, WRITER, DBA, *SCRATCH_ROLES)
TEST_ADMIN = "jit_test_admin"


def root_url() -> str:
    return os.environ.get(ROOT_URL_ENV, DEFAULT_ROOT_URL)


def url_params(url: str) -> dict:
    parts = urlsplit(url)
    return {
        "host": parts.hostname,
        "port": parts.port or 3306,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
    }


def connect(url: str | None = None, **extra) -> pymysql.connections.Connection:
    return pymysql.connect(**url_params(url or root_url()), autocommit=True, connect_timeout=5, **extra)


def execute(conn, *statements: str) -> None:
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def query(conn, statement: str, args=None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(statement, args)
        return list(cur.fetchall())


def drop_accounts(conn, pattern: re.Pattern) -> None:
    """Drop every account whose name fully matches `pattern`, killing its connections first."""
    names = {name for (name,) in query(conn, "SELECT DISTINCT User FROM mysql.user") if pattern.fullmatch(name)}
    for pid, name in query(conn, "SELECT ID, USER FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()"):
        if name and pattern.fullmatch(name):
            try:
                execute(conn, f"KILL CONNECTION {int(pid)}")
            except pymysql.MySQLError:
                pass  # already gone
    for name, host in query(conn, "SELECT User, Host FROM mysql.user WHERE is_role = 'N'"):
        if name in names:
            with conn.cursor() as cur:
                cur.execute("DROP USER IF EXISTS " + cur.mogrify("%s@%s", (name, host)))


def set_up_demo(conn) -> None:
    """Create the demo database, a look-alike database and the demo roles from scratch."""
    tear_down_demo(conn)
    # Database-level grants escape "_", which is a wildcard there.
    db_pattern = "`" + DATABASE.replace("_", "\\_") + "`.*"
    execute(
        conn,
        f"CREATE DATABASE `{DATABASE}`",
        f"CREATE TABLE `{DATABASE}`.orders (id INT AUTO_INCREMENT PRIMARY KEY, customer VARCHAR(64), amount INT)",
        f"INSERT INTO `{DATABASE}`.orders (customer, amount) VALUES ('Ada', 10), ('Grace', 20), ('Linus', 30)",
        f"CREATE DATABASE `{LOOKALIKE_DATABASE}`",
        f"CREATE TABLE `{LOOKALIKE_DATABASE}`.orders (id INT)",
        f"CREATE ROLE {READER}",
        f"GRANT SELECT ON {db_pattern} TO {READER}",
        f"CREATE ROLE {WRITER}",
        f"GRANT SELECT, INSERT ON {db_pattern} TO {WRITER}",
        f"CREATE ROLE {DBA}",
        f"GRANT ALL PRIVILEGES ON *.* TO {DBA}",
    )


def tear_down_demo(conn) -> None:
    drop_accounts(conn, re.compile(re.escape(TEST_ADMIN)))
    for role in ROLES:
        execute(conn, f"DROP ROLE IF EXISTS {role}")
    execute(conn, f"DROP DATABASE IF EXISTS `{DATABASE}`", f"DROP DATABASE IF EXISTS `{LOOKALIKE_DATABASE}`")
