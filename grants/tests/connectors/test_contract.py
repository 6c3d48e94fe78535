"""One contract, every connector kind, against the real servers the kinds' own test modules start.

Each kind gets an adapter (below) that knows how to build its grant, use
the credential, read the target as an admin and break its configuration;
the tests are the contract and are written once. Every target uses the
prefix `contract_`, so what `list_managed` (the reconciler's inventory)
returns is exactly what these tests made, even on a shared server.
Where a kind legitimately differs, its adapter says so in one line.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import os
import re
import socket
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import psycopg
import pymysql
import pytest

from devtools import pgcluster
from grants.connectors import REGISTRY, get_connector
from grants.connectors.base import ConnectorError, RequestField
from grants.connectors.ssh import ca as sshca

from . import mariadb_support as db
from . import slapd_support as sd
from . import test_aws, test_ldap, test_mysql, test_openbao, test_postgres, test_redis, test_ssh

# The kinds' own server fixtures, shared per module (or session) as there.
from .test_aws import _isolated_aws_env, aws, moto_server  # noqa: F401 (pytest fixtures, used by name)
from .test_ldap import slapd  # noqa: F401 (pytest fixtures, used by name)
from .test_openbao import bao  # noqa: F401 (pytest fixtures, used by name)
from .test_redis import redis_server  # noqa: F401 (pytest fixtures, used by name)
from .test_ssh import ca_env, identity, sshd, workdir  # noqa: F401 (pytest fixtures, used by name)

PREFIX = "contract_"
KINDS = ["postgres", "mysql", "ssh", "aws", "ldap", "openbao", "redis"]
# Far from the ranges the kinds' own modules use.
_grant_ids = itertools.count(940_000_001)

MYSQL_DATABASE = "contract_appdb"
MYSQL_READER = "contract_reader"
MYSQL_ACCOUNTS = re.compile(PREFIX + r"g[0-9]+")


def _in(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)


def _grant(scope: dict, **extra) -> SimpleNamespace:
    return SimpleNamespace(pk=next(_grant_ids), starts_at=_in(0), expires_at=_in(1200), scope=scope, params={}, **extra)


@dataclasses.dataclass
class Kind:
    """What the contract needs to know about one kind; the callables take (grant, provisioned)."""

    target: SimpleNamespace
    grant: Callable[[], SimpleNamespace]
    works: Callable[[Any, Any], bool]  # the credential does what the grant allows, used the way its user would
    gone: Callable[[Any, Any], bool]  # an admin's own read of the target finds nothing of the grant
    bad_target: SimpleNamespace  # a target whose check() must fail
    at_port: (
        Callable[[int], SimpleNamespace] | None
    )  # the target, pointed at another loopback port (None: no server to reach)
    bad_scope: dict
    refusal: str  # what the refusal of bad_scope says
    refused_by: str = "validate_scope"
    managed_name: Callable[[Any, Any], str] = lambda grant, provisioned: provisioned.external_ref
    example_params: dict = dataclasses.field(default_factory=lambda: {"public_key": "ssh-ed25519 AAAA", "note": "x"})


def _closed_port() -> int:
    return pgcluster.free_port()


def _with(target: SimpleNamespace, **config) -> SimpleNamespace:
    return SimpleNamespace(
        name=target.name, kind=target.kind, config={**target.config, **config}, secret_env=target.secret_env
    )


BAD_SECRET_ENV = "JIT_CONTRACT_BAD_ADMIN_SECRET"


def _bad_secret(target: SimpleNamespace, monkeypatch, value: str) -> SimpleNamespace:
    """The target with an admin secret that reaches no server (check() reads the server the secret names)."""
    monkeypatch.setenv(BAD_SECRET_ENV, value)
    return SimpleNamespace(name=target.name, kind=target.kind, config=dict(target.config), secret_env=BAD_SECRET_ENV)


# -- adapters -----------------------------------------------------------------------


def _postgres(request, monkeypatch) -> Kind:
    cluster = request.getfixturevalue("pg_cluster")
    monkeypatch.setenv(test_postgres.SECRET_ENV, cluster.admin_dsn)
    config = {"host": cluster.host, "port": cluster.port, "dbname": "appdb", "prefix": PREFIX}
    target = SimpleNamespace(name="contract-pg", kind="postgres", config=config, secret_env=test_postgres.SECRET_ENV)

    def works(grant, provisioned):
        with test_postgres._login(provisioned.credentials) as conn:
            return conn.execute("SELECT count(*) FROM orders").fetchone()[0] > 0

    def gone(grant, provisioned):
        with psycopg.connect(cluster.dsn("appdb"), autocommit=True) as admin:
            return (
                admin.execute(
                    "SELECT count(*) FROM pg_roles WHERE rolname = %s", [provisioned.external_ref]
                ).fetchone()[0]
                == 0
            )

    def at(port):
        return _bad_secret(target, monkeypatch, f"postgresql://postgres@127.0.0.1:{port}/appdb")

    return Kind(
        target, lambda: _grant({"roles": ["app_readonly"]}), works, gone,
        bad_target=at(_closed_port()), at_port=at,
        bad_scope={"roles": ["no_such_role"]}, refusal="no_such_role",
    )  # fmt: skip


@pytest.fixture(scope="module")
def mysql_root():
    """The shared MariaDB with this module's own database and role (contract_*), so test_mysql.py can run alongside."""
    try:
        conn = db.connect()
    except pymysql.MySQLError as exc:
        pytest.fail(f"MariaDB is not reachable at {db.root_url()} ({exc}); set {db.ROOT_URL_ENV} or start the server.")

    def clean():
        db.drop_accounts(conn, MYSQL_ACCOUNTS)
        db.execute(conn, f"DROP ROLE IF EXISTS {MYSQL_READER}", f"DROP DATABASE IF EXISTS `{MYSQL_DATABASE}`")

    clean()
    db.execute(
        conn,
        f"CREATE DATABASE `{MYSQL_DATABASE}`",
        f"CREATE TABLE `{MYSQL_DATABASE}`.orders (id INT PRIMARY KEY)",
        f"INSERT INTO `{MYSQL_DATABASE}`.orders VALUES (1), (2)",
        f"CREATE ROLE {MYSQL_READER}",
        f"GRANT SELECT ON `{MYSQL_DATABASE.replace('_', chr(92) + '_')}`.* TO {MYSQL_READER}",
    )
    try:
        yield conn
    finally:
        clean()
        conn.close()


def _mysql(request, monkeypatch) -> Kind:
    root = request.getfixturevalue("mysql_root")
    monkeypatch.setenv(test_mysql.SECRET_ENV, db.root_url())
    params = db.url_params(db.root_url())
    config = {"host": params["host"], "port": params["port"], "database": MYSQL_DATABASE, "prefix": PREFIX}
    target = SimpleNamespace(name="contract-mysql", kind="mysql", config=config, secret_env=test_mysql.SECRET_ENV)

    def works(grant, provisioned):
        with test_mysql._login(provisioned.credentials) as conn:
            return db.query(conn, "SELECT count(*) FROM orders") == [(2,)]

    def gone(grant, provisioned):
        return db.query(root, "SELECT count(*) FROM mysql.user WHERE User = %s", [provisioned.external_ref]) == [(0,)]

    def at(port):
        return _bad_secret(target, monkeypatch, f"mysql://root@127.0.0.1:{port}/")

    return Kind(
        target, lambda: _grant({"roles": [MYSQL_READER]}), works, gone,
        bad_target=at(_closed_port()), at_port=at,
        bad_scope={"roles": ["contract_no_such_role"]},
        refusal="contract_no_such_role",
    )  # fmt: skip


def _ssh(request, monkeypatch) -> Kind:
    server, folder, tmp = (
        request.getfixturevalue("sshd"),
        request.getfixturevalue("workdir"),
        request.getfixturevalue("identity"),
    )
    target = test_ssh._target(folder, port=server.port, prefix=PREFIX)
    keys: dict[int, str] = {}

    def grant():
        private, public = sshca.generate_user_key(comment="contract")
        made = _grant({"principals": ["ops"]})
        made.params = {"public_key": public}
        keys[made.pk] = private
        return made

    def works(grant, provisioned):
        key, cert = tmp(keys[grant.pk], provisioned.credentials["certificate"], name=f"g{grant.pk}")
        done = server.run(key, cert, "echo contract-ok")
        return done.returncode == 0 and "contract-ok" in done.stdout

    return Kind(
        target, grant, works,
        # a certificate cannot be deleted: sshd refuses it by the KRL
        gone=lambda grant, provisioned: not works(grant, provisioned),
        bad_target=_with(target, krl_path="/nonexistent-contract/jit.krl"),
        at_port=None,  # the portal signs certificates and publishes the KRL itself: it never connects to a host
        bad_scope={"principals": []}, refusal="principal",
        # no validate_scope: the certificate is signed from the scope alone, nothing on a host to read
        refused_by="provision",
        managed_name=lambda grant, provisioned: f"serial:{grant.pk}",  # the inventory is certificate serials, not names
    )  # fmt: skip


def _aws(request, monkeypatch) -> Kind:
    account = request.getfixturevalue("aws")
    target = request.getfixturevalue("target_aws_base")
    target = _with(target, prefix=PREFIX)

    def works(grant, provisioned):
        return (
            f":assumed-role/{provisioned.external_ref}/"
            in test_aws._caller(provisioned.credentials, account.url)["Arn"]
        )

    def at(port):
        return _with(target, endpoint_url=f"http://127.0.0.1:{port}")

    return Kind(
        target, lambda: _grant({"policy_arns": [account.policies["S3Read"]]}), works,
        gone=lambda grant, provisioned: provisioned.external_ref not in test_aws._role_names(account),
        bad_target=at(_closed_port()), at_port=at,
        bad_scope={"role_arn": "ReadOnly"}, refusal="not an IAM role ARN",
        # no validate_scope: IAM cannot be asked what a policy would allow; provision checks the scope
        refused_by="provision",
    )  # fmt: skip


@pytest.fixture
def target_aws_base(aws, monkeypatch):  # noqa: F811 (aws is the imported fixture)
    monkeypatch.setenv(
        test_aws.SECRET_ENV, f'{{"aws_access_key_id": "{aws.key_id}", "aws_secret_access_key": "{aws.secret}"}}'
    )
    config = {"region": test_aws.REGION, "endpoint_url": aws.url, "account_id": test_aws.ACCOUNT}
    return SimpleNamespace(name="contract-aws", kind="aws", config=config, secret_env=test_aws.SECRET_ENV)


def _ldap(request, monkeypatch) -> Kind:
    directory = request.getfixturevalue("slapd")
    directory.reset()
    monkeypatch.setenv(test_ldap.SECRET_ENV, sd.SERVICE_PW)
    target = test_ldap._target(directory, name="contract-ldap", prefix=PREFIX)

    def member(grant):
        return test_ldap.ANA in test_ldap.members(directory, "ops")

    def at(port):
        return _with(target, url=f"ldap://127.0.0.1:{port}")

    return Kind(
        target, lambda: _grant({"groups": [sd.group_dn("ops")]}, user=test_ldap.person("ana")),
        # no credential: the grant is group membership, read as the directory
        works=lambda grant, provisioned: member(grant),
        gone=lambda grant, provisioned: not member(grant) and directory.children(sd.LEDGER) == [],
        bad_target=at(_closed_port()), at_port=at,
        bad_scope={"groups": [sd.group_dn("nope")]}, refusal="does not exist",
    )  # fmt: skip


def _openbao(request, monkeypatch) -> Kind:
    server = request.getfixturevalue("bao")
    monkeypatch.setenv(test_openbao.SECRET_ENV, server.admin_token)
    target = test_openbao._target(
        server
    )  # prefix jit_: the README's admin policy is written for it (this server is ours alone)

    def reads(grant, provisioned):
        return test_openbao._read(server, provisioned.credentials["token"]) == 200

    def at(port):
        return _with(target, url=f"http://127.0.0.1:{port}")

    return Kind(
        target, lambda: _grant({"policies": ["app-read"]}), reads,
        # a revoked token is refused, it cannot be listed
        gone=lambda grant, provisioned: not reads(grant, provisioned),
        bad_target=at(_closed_port()), at_port=at,
        bad_scope={"policies": ["app-read", "no-such-policy"]}, refusal="Policy no-such-policy does not exist",
    )  # fmt: skip


def _redis(request, monkeypatch) -> Kind:
    server = request.getfixturevalue("redis_server")
    monkeypatch.setenv(test_redis.SECRET_ENV, server.admin_url)
    config = {"host": "127.0.0.1", "port": server.port, "prefix": PREFIX}
    target = SimpleNamespace(name="contract-redis", kind="redis", config=config, secret_env=test_redis.SECRET_ENV)

    def works(grant, provisioned):
        user = test_redis._login(server, provisioned)
        return bool(user.set("app:contract", "ok")) and user.get("app:contract") == "ok"

    def gone(grant, provisioned):
        return provisioned.credentials["username"] not in server.admin().acl_users()

    def at(port):
        return _bad_secret(target, monkeypatch, f"redis://jitadmin:wrong@127.0.0.1:{port}/0")

    return Kind(
        target, lambda: _grant(test_redis.READ_WRITE), works, gone,
        bad_target=at(_closed_port()), at_port=at,
        bad_scope={"commands": ["+nosuchcommand"]}, refusal="has no command 'nosuchcommand'",
    )  # fmt: skip


ADAPTERS = {
    "postgres": _postgres,
    "mysql": _mysql,
    "ssh": _ssh,
    "aws": _aws,
    "ldap": _ldap,
    "openbao": _openbao,
    "redis": _redis,
}


@pytest.fixture(params=KINDS)
def kind(request, monkeypatch) -> Kind:
    return ADAPTERS[request.param](request, monkeypatch)


@pytest.fixture
def connector(kind):
    with get_connector(kind.target) as c:
        yield c


@pytest.fixture
def made(connector):
    """Grants a test provisions; whatever they left behind is revoked after it."""
    grants = []
    yield grants
    for grant in grants:
        connector.revoke(grant)


def _provision(kind, connector, made):
    grant = kind.grant()
    made.append(grant)
    return grant, connector.provision(grant)


# -- the contract ---------------------------------------------------------------------


def test_provision_creates_what_the_grant_needs_and_the_credential_works(kind, connector, made):
    grant, provisioned = _provision(kind, connector, made)

    assert provisioned.expires_at <= grant.expires_at + datetime.timedelta(minutes=15)
    assert connector.is_present(grant)
    assert kind.works(grant, provisioned)


def test_provisioning_again_gives_the_same_state(kind, connector, made):
    grant, first = _provision(kind, connector, made)
    second = connector.provision(grant)

    assert second.external_ref == first.external_ref
    assert kind.works(grant, second)
    assert connector.list_managed() == {kind.managed_name(grant, second)}


def test_revoke_removes_it_and_reading_the_target_again_confirms_it(kind, connector, made):
    grant, provisioned = _provision(kind, connector, made)

    connector.revoke(grant)

    assert not connector.is_present(grant)
    assert kind.gone(grant, provisioned)
    assert connector.list_managed() == set()


def test_revoking_what_is_already_gone_succeeds(kind, connector, made):
    grant, provisioned = _provision(kind, connector, made)
    connector.revoke(grant)

    connector.revoke(grant)
    connector.revoke(kind.grant())  # never provisioned

    assert not connector.is_present(grant)


def test_inventory_under_our_prefix_is_exactly_the_live_grants_objects(kind, connector, made):
    (a, pa), (b, pb), (c, pc) = (_provision(kind, connector, made) for _ in range(3))
    assert connector.list_managed() == {kind.managed_name(g, p) for g, p in ((a, pa), (b, pb), (c, pc))}

    connector.revoke(b)

    assert connector.list_managed() == {kind.managed_name(a, pa), kind.managed_name(c, pc)}
    assert connector.present_many([a, b, c]) == {a.pk, c.pk}


def test_check_passes_on_a_good_configuration(kind, connector):
    if kind.target.kind == "ssh":
        connector.publish_krl()  # a fresh KRL folder warns until the first revocation publishes it
    assert connector.check() == []


def test_check_on_a_bad_configuration_raises_a_clear_message(kind):
    with get_connector(kind.bad_target) as connector, pytest.raises(ConnectorError) as info:
        connector.check()

    message = info.value.message
    assert repr(kind.bad_target.name) in message and "Traceback" not in message
    assert os.environ[kind.bad_target.secret_env] not in message  # the admin secret is never echoed


def test_a_scope_handing_out_too_much_or_naming_nothing_is_refused_with_a_message(kind, connector):
    grant = kind.grant()
    grant.scope = kind.bad_scope
    refuse = (
        connector.validate_scope if kind.refused_by == "validate_scope" else lambda scope: connector.provision(grant)
    )

    with pytest.raises(ConnectorError, match=kind.refusal) as info:
        refuse(kind.bad_scope)

    assert info.value.permanent
    assert connector.list_managed() == set()


def test_the_good_scope_passes_validation(kind, connector):
    assert isinstance(connector.validate_scope(kind.grant().scope), list)


def test_request_fields_are_declared_and_clean_params_keeps_only_them(kind, connector):
    fields = type(connector).request_fields

    assert isinstance(fields, dict) and all(
        isinstance(k, str) and isinstance(v, RequestField) and v.label for k, v in fields.items()
    )
    params = dict(kind.example_params)
    if "public_key" in fields:
        params["public_key"] = sshca.generate_user_key(comment="contract")[1]
    assert set(connector.clean_params(params)) <= set(fields)


class _HangingUp(threading.Thread):
    """A loopback port whose server accepts every connection and closes it at once, counting them: a broken target."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            conn.close()

    def settled(self) -> int:
        """The count once the clients' connections have arrived (a closed connection is counted when accepted)."""
        for _ in range(50):
            before = self.accepted
            threading.Event().wait(0.05)
            if self.accepted == before:
                return before
        return self.accepted


@pytest.fixture
def hanging_up():
    server = _HangingUp()
    server.start()
    yield server
    server.sock.close()


def _fails(call) -> bool:
    """Did the call fail (a ConnectorError, or revoke_many naming the grants it could not revoke)?"""
    try:
        return bool(call())
    except ConnectorError:
        return True


@pytest.mark.parametrize(
    "kind", [k for k in KINDS if k != "ssh"], indirect=True
)  # ssh: no server to reach (its adapter)
def test_a_target_that_hangs_up_is_tried_once_per_pass_not_once_per_grant(kind, hanging_up):
    # One call on a fresh instance: what a single attempt costs (the client library's own retries included).
    with get_connector(kind.at_port(hanging_up.port)) as connector:
        assert _fails(lambda: connector.is_present(kind.grant()))
    one_attempt = hanging_up.settled()
    assert one_attempt >= 1

    # A pass over several grants: every call fails, and the server is not asked again.
    with get_connector(kind.at_port(hanging_up.port)) as connector:
        grants = [kind.grant() for _ in range(4)]
        assert _fails(lambda: connector.revoke(grants[0]))
        assert _fails(lambda: connector.is_present(grants[1]))
        assert _fails(lambda: connector.revoke_many(grants[2:]))
        assert _fails(lambda: connector.present_many(grants))

    assert hanging_up.settled() == 2 * one_attempt


def test_every_registered_kind_runs_the_contract():
    assert sorted(ADAPTERS) == sorted(KINDS) == sorted(REGISTRY)
