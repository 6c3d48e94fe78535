"""OpenBaoConnector against the real `bao` server (dev mode, in memory) the suite starts on a loopback port.

The portal's admin token is not root: it is a periodic token with the policy
from docs/openbao-jitportal-policy.hcl, exactly as the README tells an
operator to make it, so these tests also prove that policy is enough.
"""

import datetime
import itertools
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from grants import catalog, lifecycle, reconcile
from grants.connectors.base import ConnectorError
from grants.connectors.openbao import OpenBaoConnector
from grants.models import AccessProfile, DriftFinding, Grant, Target

from ..conftest import JUSTIFICATION
from .openbao_support import BaoDevServer

SECRET_ENV = "JIT_TEST_BAO_TOKEN"
_grant_ids = itertools.count(4001)

POLICIES = {
    "app-read": 'path "secret/data/app/*" { capabilities = ["read"] }',
    "child-maker": 'path "secret/data/app/*" { capabilities = ["read"] }\n'
    'path "auth/token/create" { capabilities = ["create", "update"] }',
    "orphan-maker": 'path "auth/token/create-orphan" { capabilities = ["create", "update", "sudo"] }',
    "no-parent": 'path "auth/token/create" { capabilities = ["create", "update", "sudo"] }',
    "role-user": 'path "auth/token/create/*" { capabilities = ["create", "update"] }',
    "role-writer": 'path "auth/token/roles/*" { capabilities = ["create", "update"] }',
    "policy-writer": 'path "sys/policies/acl/*" { capabilities = ["create", "update", "read"] }',
    "user-maker": 'path "auth/userpass/users/*" { capabilities = ["create", "update"] }',
    "group-writer": 'path "identity/group/*" { capabilities = ["create", "update"] }',
    "everything": 'path "*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }',
}


@pytest.fixture(scope="session")
def bao():
    base = Path(tempfile.mkdtemp(prefix="jitportal-bao-"))
    server = BaoDevServer(base)
    server.start()
    try:
        for name, rules in POLICIES.items():
            server.write_policy(name, rules)
        server.api("POST", "sys/auth/userpass", json={"type": "userpass"})
        server.api("POST", "secret/data/app/db", json={"data": {"password": "app-db-password"}})
        server.api("POST", "secret/data/billing/db", json={"data": {"password": "billing-db-password"}})
        server.admin_token = server.portal_token()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _target(bao, **config):
    return SimpleNamespace(name="secrets", kind="openbao", config={"url": bao.url, **config}, secret_env=SECRET_ENV)


@pytest.fixture
def connector(bao, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, bao.admin_token)
    with OpenBaoConnector(_target(bao)) as c:
        yield c


def _grant(policies=("app-read",), seconds=3600, **scope):
    return SimpleNamespace(
        pk=next(_grant_ids),
        scope={"policies": list(policies), **scope},
        expires_at=datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds),
    )


def _read(bao, token, path="secret/data/app/db"):
    return bao.status("GET", path, token=token)


def test_a_grant_token_reads_what_its_policies_allow_and_nothing_else(connector, bao):
    grant = _grant()
    provisioned = connector.provision(grant)
    token = provisioned.credentials["token"]

    assert provisioned.external_ref == f"jit_g{grant.pk}"
    assert bao.api("GET", "secret/data/app/db", token=token)["data"]["data"] == {"password": "app-db-password"}
    assert _read(bao, token, "secret/data/billing/db") == 403
    me = bao.api("GET", "auth/token/lookup-self", token=token)["data"]
    assert me["renewable"] is False and me["orphan"] is True and me["type"] == "service"
    assert me["meta"] == {"jitportal_grant": str(grant.pk), "jitportal_target": "secrets"}
    assert sorted(me["policies"]) == ["app-read", "default"]
    assert 3500 <= me["explicit_max_ttl"] <= 3600  # ends at the grant's expiry, by the server's clock
    assert provisioned.expires_at <= grant.expires_at
    assert token not in provisioned.external_ref and provisioned.credentials["accessor"] == me["accessor"]
    assert f"export BAO_TOKEN={token}" in provisioned.credentials["env"]


def test_the_server_itself_refuses_the_token_after_expiry_and_it_cannot_be_renewed(connector, bao):
    provisioned = connector.provision(_grant(seconds=3))
    token = provisioned.credentials["token"]
    assert _read(bao, token) == 200
    assert bao.status("POST", "auth/token/renew-self", token=token, json={"increment": "1h"}) == 400

    # No revocation here: the portal's workers might as well be down.
    deadline = time.monotonic() + 30
    while _read(bao, token) == 200 and time.monotonic() < deadline:
        time.sleep(0.5)

    assert _read(bao, token) == 403
    assert bao.status("GET", "auth/token/lookup-self", token=token) == 403


def test_a_child_token_the_grant_token_made_dies_with_revocation(connector, bao):
    grant = _grant(("child-maker",))
    token = connector.provision(grant).credentials["token"]
    child = bao.api("POST", "auth/token/create", token=token, json={"policies": ["child-maker"], "ttl": "24h"})["auth"][
        "client_token"
    ]
    assert _read(bao, child) == 200
    # A child cannot be made an orphan without sudo, which validate_scope refuses.
    assert bao.status("POST", "auth/token/create", token=token, json={"no_parent": True}) == 400

    connector.revoke(grant)

    assert _read(bao, token) == 403 and _read(bao, child) == 403
    assert not connector.is_present(grant)


def test_revoking_twice_or_what_never_existed_succeeds(connector):
    grant = _grant()
    connector.provision(grant)

    connector.revoke(grant)
    connector.revoke(grant)
    connector.revoke(_grant())

    assert not connector.is_present(grant)


def test_provisioning_twice_revokes_the_first_token_and_leaves_one_working(connector, bao):
    grant = _grant()
    first = connector.provision(grant).credentials["token"]
    second = connector.provision(grant).credentials["token"]

    assert _read(bao, first) == 403 and _read(bao, second) == 200
    assert len(bao.api("LIST", f"sys/leases/lookup/auth/token/create/jit_g{grant.pk}/")["data"]["keys"]) == 1
    connector.revoke(grant)


def test_a_token_whose_role_was_deleted_by_hand_is_still_found_and_revoked(connector, bao):
    grant = _grant()
    token = connector.provision(grant).credentials["token"]
    bao.api("DELETE", f"auth/token/roles/jit_g{grant.pk}")

    assert f"jit_g{grant.pk}" in connector.list_managed() and connector.is_present(grant)
    connector.revoke(grant)
    assert _read(bao, token) == 403 and not connector.is_present(grant)


def test_list_managed_lists_only_names_of_grants(connector, bao):
    grant = _grant()
    connector.provision(grant)
    bao.api("POST", "auth/token/roles/jit_gadmin", json={"allowed_policies": ["app-read"]})

    managed = connector.list_managed()

    assert f"jit_g{grant.pk}" in managed and "jit_gadmin" not in managed
    assert not [name for name in managed if "check" in name]  # validate_scope's throwaway roles are gone
    bao.api("DELETE", "auth/token/roles/jit_gadmin")
    connector.revoke(grant)


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        (["root"], "a root token can do everything"),
        (["orphan-maker"], "sudo on auth/token/create-orphan: it creates orphan tokens"),
        (["no-parent"], r"sudo on auth/token/create: it creates tokens without a parent"),
        (["role-user"], "on auth/token/create/jit_g0: it creates orphan tokens through other grants' token roles"),
        (["role-writer"], "on auth/token/roles/jitportal-probe: it defines token roles"),
        (["policy-writer"], "on sys/policies/acl/policy-writer: it writes policies"),
        (["user-maker"], "on auth/userpass/users/jitportal-probe: it makes logins under auth/userpass/"),
        (["group-writer"], "on identity/group/id/jitportal-probe: it gives identities policies through groups"),
        (["everything"], "on sys/raw/jitportal-probe"),
        (["app-read", "no-such-policy"], "Policy no-such-policy does not exist"),
    ],
)
def test_a_scope_whose_token_could_outlive_the_grant_is_refused_naming_the_path(connector, policies, message):
    with pytest.raises(ConnectorError, match=message) as exc:
        connector.validate_scope({"policies": policies})
    assert exc.value.permanent


def test_a_plain_scope_passes_and_leaves_nothing_on_the_server(connector, bao):
    roles_before = bao.api("LIST", "auth/token/roles", ok=(200, 404)).get("data", {}).get("keys", [])

    assert connector.validate_scope({"policies": ["app-read", "child-maker"]}) == []
    assert connector.validate_scope({"policies": ["app-read"], "no_default_policy": True}) == []

    assert bao.api("LIST", "auth/token/roles", ok=(200, 404)).get("data", {}).get("keys", []) == roles_before


@pytest.mark.parametrize("role", ["ci-orphans", "jit_ci"])  # the second shares the portal's prefix
def test_an_orphan_token_role_made_by_hand_is_an_escape_too(connector, bao, role):
    bao.api("POST", f"auth/token/roles/{role}", json={"orphan": True, "allowed_policies": ["app-read"]})
    bao.write_policy("ci-user", f'path "auth/token/create/{role}" {{ capabilities = ["update"] }}')
    try:
        with pytest.raises(ConnectorError, match=f"through token role {role}"):
            connector.validate_scope({"policies": ["ci-user"]})
    finally:
        bao.api("DELETE", f"auth/token/roles/{role}")


def test_provisioning_checks_the_very_token_and_revokes_it_when_a_policy_grew_since_plan(connector, bao):
    bao.write_policy("grows", POLICIES["app-read"])
    assert connector.validate_scope({"policies": ["grows"]}) == []
    bao.write_policy("grows", POLICIES["app-read"] + "\n" + POLICIES["orphan-maker"])
    grant = _grant(("grows",))

    with pytest.raises(ConnectorError, match="create-orphan") as exc:
        connector.provision(grant)

    assert exc.value.permanent and not connector.is_present(grant)


def test_bad_scopes_are_refused_before_the_server_is_asked(connector):
    for scope, message in (
        ({}, "must be a non-empty list"),
        ({"policies": "app-read"}, "must be a non-empty list"),
        ({"policies": ["../sys"]}, "are not valid"),
        ({"policies": ["app-read"], "ttl": "1h"}, "ttl unknown"),
        ({"policies": ["app-read"], "no_default_policy": "yes"}, "true or false"),
    ):
        with pytest.raises(ConnectorError, match=message):
            connector.validate_scope(scope)


def test_openbao_access_cannot_be_extended_in_place(connector):
    assert connector.extends_in_place is False
    with pytest.raises(ConnectorError, match="cannot be raised"):
        connector.extend(_grant())


def test_check_passes_for_the_readme_admin_token_and_renews_it(connector, bao):
    before = bao.api("GET", "auth/token/lookup-self", token=bao.admin_token)["data"]["ttl"]
    time.sleep(1.1)

    assert connector.check() == []

    assert bao.api("GET", "auth/token/lookup-self", token=bao.admin_token)["data"]["ttl"] >= before


def test_check_warns_about_a_root_admin_token(bao, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, bao.root_token)
    with OpenBaoConnector(_target(bao)) as c:
        [warning] = c.check()
    assert "root token" in warning


def test_check_names_what_a_weak_admin_token_lacks(bao, monkeypatch):
    weak = bao.api("POST", "auth/token/create-orphan", json={"policies": ["app-read"], "ttl": "1h"})["auth"][
        "client_token"
    ]
    monkeypatch.setenv(SECRET_ENV, weak)
    with (
        OpenBaoConnector(_target(bao)) as c,
        pytest.raises(ConnectorError, match="lacks .*sudo, update on sys/leases/revoke-prefix") as exc,
    ):
        c.check()
    assert exc.value.permanent and weak not in exc.value.message


def test_an_invalid_admin_token_is_a_permanent_error_that_does_not_show_it(bao, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "s.not-a-real-token-1234")
    with OpenBaoConnector(_target(bao)) as c, pytest.raises(ConnectorError, match="invalid, expired") as exc:
        c.check()
    assert exc.value.permanent and "not-a-real-token" not in exc.value.message


def test_an_unreachable_server_is_a_transient_error(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "s.whatever")
    target = SimpleNamespace(name="gone", kind="openbao", config={"url": "http://127.0.0.1:1"}, secret_env=SECRET_ENV)
    with OpenBaoConnector(target) as c, pytest.raises(ConnectorError, match="Cannot reach") as exc:
        c.check()
    assert not exc.value.permanent


def test_a_url_that_is_not_a_server_address_is_refused(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "s.whatever")
    target = SimpleNamespace(name="odd", kind="openbao", config={"url": "bao.internal:8200/v1"}, secret_env=SECRET_ENV)
    with OpenBaoConnector(target) as c, pytest.raises(ConnectorError, match="must be the server's address"):
        c.check()


# -- the lifecycle through the connector ------------------------------------------


@pytest.fixture
def bao_profile(db, groups, bao, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, bao.admin_token)
    target = Target.objects.create(name="secrets", kind="openbao", config={"url": bao.url}, secret_env=SECRET_ENV)
    profile = AccessProfile.objects.create(
        name="app-secrets",
        title="app secrets",
        target=target,
        scope={"policies": ["app-read"]},
        max_duration=datetime.timedelta(hours=4),
        approver_group=groups["db-approvers"],
    )
    profile.requestable_by.add(groups["engineers"])
    return profile


def test_an_openbao_grant_goes_through_the_whole_lifecycle_and_the_reconciler_removes_an_orphan(
    ana, otto, bao_profile, bao
):
    req = lifecycle.submit_request(
        requester=ana, profile=bao_profile, duration=datetime.timedelta(hours=1), justification=JUSTIFICATION
    )
    lifecycle.approve_request(req.pk, actor=otto)
    grant = lifecycle.provision_grant(req.grant.pk)
    assert grant.status == "active" and grant.external_ref == f"jit_g{grant.pk}"
    token = lifecycle.reveal_credentials(grant.pk, actor=ana)["token"]
    assert token not in Grant.objects.get(pk=grant.pk).sealed_credentials
    assert _read(bao, token) == 200

    lifecycle.revoke_grant(grant.pk, actor=ana, reason="released")
    grant = lifecycle.complete_revocation(grant.pk)
    assert grant.status == "revoked" and grant.verified_at
    assert _read(bao, token) == 403

    # A token under our prefix that no grant explains (a worker died before recording it).
    with OpenBaoConnector(bao_profile.target) as c:
        orphan = c.provision(SimpleNamespace(pk=999_999, scope={"policies": ["app-read"]}, expires_at=grant.expires_at))
    [finding] = reconcile.reconcile_target(bao_profile.target)
    assert finding.kind == DriftFinding.Kind.ORPHAN and finding.action == "removed from the target"
    assert _read(bao, orphan.credentials["token"]) == 403


def test_catalog_plan_refuses_an_openbao_profile_whose_token_could_mint_orphans(db, tmp_path, bao, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, bao.admin_token)
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "targets:\n"
        "  secrets:\n"
        "    kind: openbao\n"
        f"    config: {{url: '{bao.url}'}}\n"
        f"    secret_env: {SECRET_ENV}\n"
        "profiles:\n"
        "  ci-tokens:\n"
        "    title: CI tokens\n"
        "    target: secrets\n"
        "    scope: {policies: [app-read, orphan-maker]}\n"
        "    max_duration: 1h\n"
        "    approvers: {group: db-approvers}\n"
    )
    with pytest.raises(catalog.CatalogError) as exc:
        catalog.plan(str(path))
    [error] = exc.value.errors
    assert error.startswith(f"{path}:10: profiles.ci-tokens.scope: Refusing the scope on target 'secrets'")
    assert "auth/token/create-orphan" in error and not Target.objects.exists()
