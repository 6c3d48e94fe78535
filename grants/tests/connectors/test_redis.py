"""RedisConnector against a real redis-server the suite starts on its own loopback port, with an ACL file."""

import datetime
import itertools
import shutil
import socket
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from grants import catalog, lifecycle, reconcile
from grants.connectors.base import ConnectorError
from grants.connectors.redis import RedisConnector
from grants.models import AccessProfile, DriftFinding, Grant, Target

from ..conftest import JUSTIFICATION
from .redis_support import RedisServer, available

SECRET_ENV = "JIT_TEST_REDIS_ADMIN"
READ_WRITE = {"keys": ["app:*"], "channels": ["app-events"], "commands": ["+@read", "+@write", "-function", "+publish"]}
_grant_ids = itertools.count(3001)


def _base():
    # The server writes its ACL file and log here.
    return Path(tempfile.mkdtemp(prefix="jitportal-redis-"))


@pytest.fixture(scope="session")
def redis_server():
    if not available():
        pytest.fail("redis-server is missing: `make system-deps` installs it (Debian package redis-server).")
    base = _base()
    server = RedisServer(base)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def connector(redis_server, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, redis_server.admin_url)
    target = SimpleNamespace(
        name="cache", kind="redis", config={"host": "127.0.0.1", "port": redis_server.port}, secret_env=SECRET_ENV
    )
    with RedisConnector(target) as c:
        yield c


def _grant(scope=READ_WRITE, hours=1):
    return SimpleNamespace(
        pk=next(_grant_ids),
        scope=scope,
        expires_at=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=hours),
    )


def _login(server, provisioned):
    return server.login(provisioned.credentials["username"], provisioned.credentials["password"])


def test_a_grant_user_runs_the_allowed_commands_on_its_keys_and_is_refused_the_rest(connector, redis_server):
    grant = _grant()
    provisioned = connector.provision(grant)
    user = _login(redis_server, provisioned)

    assert provisioned.external_ref == f"jit_g{grant.pk}"
    assert user.set("app:greeting", "hello") and user.get("app:greeting") == "hello"
    assert user.publish("app-events", "hi") == 0
    for refused in (
        lambda: user.get("billing:secret"),  # a key outside its patterns
        lambda: user.publish("billing-events", "hi"),  # a channel outside its patterns
        lambda: user.execute_command("FLUSHALL"),  # @dangerous, taken away whatever the scope says
        lambda: user.execute_command("KEYS", "*"),
        lambda: user.execute_command("CONFIG", "GET", "*"),
        lambda: user.execute_command("ACL", "SETUSER", "me", "on", "nopass", "+@all"),
        lambda: user.execute_command("FUNCTION", "FLUSH"),  # -function in the scope
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            refused()
    user.close()


def test_the_clear_password_never_reaches_the_server_only_its_hash(connector, redis_server):
    provisioned = connector.provision(_grant())
    password = provisioned.credentials["password"]

    described = " ".join(redis_server.admin().acl_list())

    assert password not in described and password not in redis_server.aclfile.read_text()
    assert "#" in described  # stored as the SHA-256 the connector sent


def test_read_keys_and_write_keys_limit_each_direction(connector, redis_server):
    provisioned = connector.provision(
        _grant({"read_keys": ["cfg:*"], "write_keys": ["out:*"], "commands": ["+get", "+set"]})
    )
    redis_server.admin().set("cfg:mode", "fast")
    user = _login(redis_server, provisioned)

    assert user.get("cfg:mode") == "fast" and user.set("out:x", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        user.set("cfg:mode", "slow")
    with pytest.raises(redis.exceptions.NoPermissionError):
        user.get("out:x")
    user.close()


def test_revocation_kills_a_connected_client_deletes_the_user_and_saves_the_acl_file(connector, redis_server):
    grant = _grant()
    provisioned = connector.provision(grant)
    name = provisioned.external_ref
    assert f"user {name} " in redis_server.aclfile.read_text()
    # A raw connection, so that nothing reconnects behind the test's back.
    sock = socket.create_connection(("127.0.0.1", redis_server.port), timeout=10)
    password = provisioned.credentials["password"]
    sock.sendall(f"AUTH {name} {password}\r\n".encode())
    assert sock.recv(64) == b"+OK\r\n"

    connector.revoke(grant)

    sock.sendall(b"PING\r\n")
    try:
        answer = sock.recv(64)
    except ConnectionResetError:
        answer = b""
    sock.close()
    assert answer == b""  # the server closed the connection
    assert redis_server.admin().acl_getuser(name) is None
    assert not [c for c in redis_server.admin().client_list() if c.get("user") == name]
    assert f"user {name} " not in redis_server.aclfile.read_text()  # a restart would not bring it back
    with pytest.raises(redis.exceptions.AuthenticationError):
        _login(redis_server, provisioned).get("app:x")
    assert not connector.is_present(grant)


def test_revoking_twice_or_what_never_existed_succeeds(connector):
    grant = _grant()
    connector.provision(grant)

    connector.revoke(grant)
    connector.revoke(grant)
    connector.revoke(_grant())

    assert not connector.is_present(grant)


def test_provisioning_twice_leaves_one_user_with_the_latest_password(connector, redis_server):
    grant = _grant()
    first = connector.provision(grant)
    second = connector.provision(grant)

    with pytest.raises(redis.exceptions.AuthenticationError):
        _login(redis_server, first).get("app:x")
    assert _login(redis_server, second).set("app:x", "2")
    assert connector.list_managed() >= {second.external_ref}


def test_extending_keeps_the_user_and_refuses_one_that_is_gone(connector):
    grant = _grant()
    connector.provision(grant)
    connector.extend(grant)
    connector.revoke(grant)

    with pytest.raises(ConnectorError, match="does not exist"):
        connector.extend(grant)


@pytest.mark.parametrize(
    ("commands", "message"),
    [
        (["+@all"], "grants every command"),
        (["allcommands"], "grants every command"),
        (["+get", "nopass"], "without a password"),
        (["+@admin"], "administers the server"),
        (["+@dangerous"], "administer the server or touch every key"),
        (["+acl"], "ACL administers the server"),
        (["+config|get"], "CONFIG and its subcommands administer the server"),
        (["+module|load"], "MODULE and its subcommands"),
        (["+debug"], "DEBUG and its subcommands"),
        (["+shutdown"], "SHUTDOWN administers the server"),
        (["+keys"], "puts keys in @dangerous"),  # the server's own categories
        (["+slowlog"], r"puts slowlog\|\w+ in @admin"),  # a container with administering subcommands
        (["+get", ">secret"], r"must be \+@category"),
        (["+get", "~*"], r"must be \+@category"),
        (["-@all"], "grants no command"),
        (["+nosuchcommand"], "has no command 'nosuchcommand'"),
        (["+@nosuchcategory"], "has no category 'nosuchcategory'"),
    ],
)
def test_a_scope_handing_out_the_servers_administration_is_refused_with_a_reason(connector, commands, message):
    with pytest.raises(ConnectorError, match=message) as exc:
        connector.validate_scope({"commands": commands})
    assert exc.value.permanent


def test_provisioning_refuses_a_dangerous_scope_and_creates_no_user(connector):
    grant = _grant({"keys": ["*"], "commands": ["+@read", "+flushall"]})

    with pytest.raises(ConnectorError, match="FLUSHALL administers the server"):
        connector.provision(grant)
    assert not connector.is_present(grant)


def test_bad_patterns_and_unknown_fields_are_refused_naming_them(connector):
    with pytest.raises(ConnectorError, match="keys pattern 'a b'"):
        connector.validate_scope({"keys": ["a b"], "commands": ["+get"]})
    with pytest.raises(ConnectorError, match="field.s. databases unknown"):
        connector.validate_scope({"databases": [1], "commands": ["+get"]})


def test_a_harmless_subcommand_of_an_administering_command_is_accepted(connector):
    assert connector.validate_scope({"commands": ["+get", "+client|setname", "+client|id"]}) == []


def test_a_scope_that_lets_users_leave_functions_behind_gets_a_warning(connector):
    [warning] = connector.validate_scope({"keys": ["app:*"], "commands": ["+@read", "+@write"]})

    assert "FUNCTION LOAD" in warning and "-function" in warning


def test_list_managed_lists_only_names_of_grants(connector, redis_server):
    grant = _grant()
    connector.provision(grant)
    redis_server.admin().acl_setuser("jit_gadmin", enabled=False)

    managed = connector.list_managed()

    assert f"jit_g{grant.pk}" in managed and "jit_gadmin" not in managed and "jitadmin" not in managed
    redis_server.admin().acl_deluser("jit_gadmin")


def test_check_passes_with_an_acl_file_and_the_default_user_off(connector):
    assert connector.check() == []


def test_check_warns_about_a_passwordless_default_user_and_no_acl_file(monkeypatch):
    base = _base()
    server = RedisServer(base, aclfile=False)
    server.start()
    try:
        monkeypatch.setenv(SECRET_ENV, f"redis://127.0.0.1:{server.port}/0")
        target = SimpleNamespace(
            name="bare", kind="redis", config={"host": "127.0.0.1", "port": server.port}, secret_env=SECRET_ENV
        )
        with RedisConnector(target) as c:
            warnings = c.check()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert any("default user is on and needs no password" in w for w in warnings)
    assert any("no ACL file" in w for w in warnings)


def test_check_refuses_an_admin_user_that_may_not_manage_acl_users(connector, redis_server, monkeypatch):
    redis_server.admin().execute_command(
        "ACL", "SETUSER", "weak", "reset", "on", ">weak-password", "+@read", "+ping", "+acl|whoami", "+acl|dryrun"
    )
    monkeypatch.setenv(SECRET_ENV, f"redis://weak:weak-password@127.0.0.1:{redis_server.port}/0")
    target = SimpleNamespace(
        name="cache", kind="redis", config={"host": "127.0.0.1", "port": redis_server.port}, secret_env=SECRET_ENV
    )
    try:
        with RedisConnector(target) as c, pytest.raises(ConnectorError, match="may not run ACL SETUSER") as exc:
            c.check()
    finally:
        redis_server.admin().acl_deluser("weak")
    assert exc.value.permanent


def test_an_unreachable_server_is_a_transient_error_without_the_password(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "redis://jitadmin:s3cret-pw@127.0.0.1:1/0")
    target = SimpleNamespace(name="gone", kind="redis", config={"host": "127.0.0.1", "port": 1}, secret_env=SECRET_ENV)
    with RedisConnector(target) as c, pytest.raises(ConnectorError) as exc:
        c.check()
    assert not exc.value.permanent and "s3cret-pw" not in exc.value.message


def test_a_malformed_admin_url_is_refused_without_echoing_it(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "http://jitadmin:s3cret-pw@127.0.0.1/")
    target = SimpleNamespace(
        name="odd", kind="redis", config={"host": "127.0.0.1", "port": 6379}, secret_env=SECRET_ENV
    )
    with RedisConnector(target) as c, pytest.raises(ConnectorError, match="malformed") as exc:
        c.check()
    assert exc.value.permanent and "s3cret-pw" not in exc.value.message


# -- the lifecycle through the connector ------------------------------------------


@pytest.fixture
def redis_profile(db, groups, redis_server, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, redis_server.admin_url)
    target = Target.objects.create(
        name="cache", kind="redis", config={"host": "127.0.0.1", "port": redis_server.port}, secret_env=SECRET_ENV
    )
    profile = AccessProfile.objects.create(
        name="cache-rw",
        title="cache read-write",
        target=target,
        scope=READ_WRITE,
        max_duration=datetime.timedelta(hours=4),
        approver_group=groups["db-approvers"],
    )
    profile.requestable_by.add(groups["engineers"])
    return profile


def test_a_redis_grant_goes_through_the_whole_lifecycle_and_the_reconciler_removes_an_orphan(
    ana, otto, redis_profile, redis_server
):
    req = lifecycle.submit_request(
        requester=ana, profile=redis_profile, duration=datetime.timedelta(hours=1), justification=JUSTIFICATION
    )
    lifecycle.approve_request(req.pk, actor=otto)
    grant = lifecycle.provision_grant(req.grant.pk)
    assert grant.status == "active" and grant.external_ref == f"jit_g{grant.pk}"
    credentials = lifecycle.reveal_credentials(grant.pk, actor=ana)
    user = redis.Redis.from_url(credentials["url"], decode_responses=True)
    assert user.set("app:x", "1") and user.get("app:x") == "1"
    user.close()

    lifecycle.revoke_grant(grant.pk, actor=ana, reason="released")
    grant = lifecycle.complete_revocation(grant.pk)
    assert grant.status == "revoked" and grant.verified_at
    assert redis_server.admin().acl_getuser(f"jit_g{grant.pk}") is None

    # A user under our prefix that no grant explains (a worker died before recording it).
    with RedisConnector(redis_profile.target) as c:
        c.provision(SimpleNamespace(pk=999_999, scope=READ_WRITE, expires_at=grant.expires_at))
    [finding] = reconcile.reconcile_target(redis_profile.target)
    assert finding.kind == DriftFinding.Kind.ORPHAN and finding.action == "removed from the target"
    assert redis_server.admin().acl_getuser("jit_g999999") is None
    assert Grant.objects.get(pk=grant.pk).status == "revoked"


def test_catalog_plan_refuses_a_redis_profile_that_hands_out_flushall(db, tmp_path, redis_server, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, redis_server.admin_url)
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "targets:\n"
        "  cache:\n"
        "    kind: redis\n"
        f"    config: {{host: 127.0.0.1, port: {redis_server.port}}}\n"
        f"    secret_env: {SECRET_ENV}\n"
        "profiles:\n"
        "  cache-admin:\n"
        "    title: cache admin\n"
        "    target: cache\n"
        "    scope: {keys: ['*'], commands: ['+@read', '+flushall']}\n"
        "    max_duration: 1h\n"
        "    approvers: {group: db-approvers}\n"
    )
    with pytest.raises(catalog.CatalogError) as exc:
        catalog.plan(str(path))
    [error] = exc.value.errors
    assert error.startswith(f"{path}:10: profiles.cache-admin.scope: Grant scope commands rule '+flushall' is refused")
    assert not Target.objects.exists()
