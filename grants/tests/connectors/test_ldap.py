"""LDAPConnector against a real OpenLDAP slapd the tests start on loopback (see slapd_support.py).

Grants and targets are plain namespaces: the connector never touches the
portal's database. Each test starts from the same directory: people ana,
bob, carl (and a few odd ones), groups ops and dba (groupOfNames, bob is in
ops outside the portal), audit (groupOfUniqueNames), deploy (posixGroup,
memberUid bob) and solo (groupOfNames with carl as its only member).
"""

import datetime
import itertools
import json
import textwrap
from types import SimpleNamespace

import ldap3
import pytest

from devtools import pgcluster
from grants import catalog
from grants.connectors import get_connector
from grants.connectors.base import ConnectorError
from grants.connectors.ldap import LDAPConnector

from . import slapd_support as sd
from .slapd_support import GROUPS, LEDGER, PEOPLE, group_dn, person_dn

SECRET_ENV = "JIT_TEST_LDAP_BIND_PASSWORD"
_grant_ids = itertools.count(5001)


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def slapd():
    if not sd.available():
        pytest.fail(
            "These tests need OpenLDAP: DEBIAN_FRONTEND=noninteractive apt-get install -y slapd ldap-utils "
            "(make system-deps)."
        )
    server = sd.SlapdServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def directory(slapd, monkeypatch):
    slapd.reset()
    monkeypatch.setenv(SECRET_ENV, sd.SERVICE_PW)
    return slapd


def _target(slapd, name="corp-ldap", **config):
    base = {
        "url": slapd.url,
        "bind_dn": sd.SERVICE_DN,
        "user_base": PEOPLE,
        "user_filter": "(&(objectClass=inetOrgPerson)(mail={email}))",
        "ledger_dn": LEDGER,
    }
    return SimpleNamespace(name=name, kind="ldap", config={**base, **config}, secret_env=SECRET_ENV)


@pytest.fixture
def target(directory):
    return _target(directory)


@pytest.fixture
def connector(target):
    with LDAPConnector(target) as c:
        yield c


def person(username, email=None, **extra):
    """The portal's view of a person: what it holds from the IdP, never what a requester typed."""
    return SimpleNamespace(username=username, email=f"{username}@example.com" if email is None else email,
                           idp_subject=extra.get("idp_subject", ""),
                           employee_id=extra.get("employee_id", ""))  # fmt: skip


def make_grant(user, *groups, minutes=30):
    return SimpleNamespace(
        pk=next(_grant_ids),
        expires_at=datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=minutes),
        scope={"groups": [group_dn(g) for g in groups]},
        user=user,
    )


def members(slapd, group):
    return slapd.members(group_dn(group))


ANA, BOB, CARL = (person_dn(u).lower() for u in ("ana", "bob", "carl"))


# -- provisioning and revocation ---------------------------------------------------


def test_a_grant_adds_the_persons_entry_to_each_group_and_an_application_sees_it(connector, directory):
    grant = make_grant(person("ana"), "ops", "dba")
    result = connector.provision(grant)
    assert result.external_ref == f"jit_g{grant.pk}"
    assert ANA in members(directory, "ops") and ANA in members(directory, "dba")
    assert result.credentials["directory_entry"].lower() == ANA
    assert result.credentials["groups"].splitlines() == [group_dn("ops"), group_dn("dba")]
    assert connector.is_present(grant)
    # What an application does: bind as the person and look up their groups.
    with directory.bind_as("ana") as app:
        app.search(GROUPS, f"(member={person_dn('ana')})", attributes=["cn"])
        assert sorted(e.cn.value for e in app.entries) == ["dba", "ops"]


def test_revocation_removes_the_membership_and_a_fresh_read_finds_it_gone(connector, directory):
    grant = make_grant(person("ana"), "ops", "dba")
    connector.provision(grant)
    connector.revoke(grant)
    assert ANA not in members(directory, "ops") and ANA not in members(directory, "dba")
    assert BOB in members(directory, "ops")  # the other members stay
    assert not connector.is_present(grant)
    assert directory.children(LEDGER) == []


def test_revoking_twice_or_revoking_what_was_never_provisioned_succeeds(connector, directory):
    grant = make_grant(person("ana"), "ops")
    connector.provision(grant)
    connector.revoke(grant)
    connector.revoke(grant)
    connector.revoke(make_grant(person("ana"), "ops"))
    assert not connector.is_present(grant)


def test_provisioning_twice_gives_the_same_state(connector, directory):
    grant = make_grant(person("ana"), "ops")
    connector.provision(grant)
    connector.provision(grant)
    assert ANA in members(directory, "ops")
    assert len(directory.children(LEDGER)) == 1
    connector.revoke(grant)
    assert ANA not in members(directory, "ops")


def test_a_membership_the_person_had_before_the_grant_is_never_removed(connector, directory):
    # bob is in ops outside the portal; the grant gives him dba too.
    grant = make_grant(person("bob"), "ops", "dba")
    connector.provision(grant)
    connector.revoke(grant)
    assert BOB in members(directory, "ops")
    assert BOB not in members(directory, "dba")
    assert not connector.is_present(grant)


def test_a_late_revocation_retry_leaves_a_membership_an_admin_added_afterwards(connector, directory):
    grant = make_grant(person("ana"), "ops")
    connector.provision(grant)
    connector.revoke(grant)
    directory.modify(group_dn("ops"), {"member": [(ldap3.MODIFY_ADD, [person_dn("ana")])]})
    connector.revoke(grant)  # a late retry must not remove what an admin added after the revocation
    assert ANA in members(directory, "ops")


def test_two_overlapping_grants_keep_the_membership_until_the_last_one_ends(connector, directory):
    first, second = make_grant(person("ana"), "ops"), make_grant(person("ana"), "ops", "dba")
    connector.provision(first)
    connector.provision(second)
    connector.revoke(first)
    assert ANA in members(directory, "ops")  # second still holds it
    assert not connector.is_present(first) and connector.is_present(second)
    connector.revoke(second)
    assert ANA not in members(directory, "ops") and ANA not in members(directory, "dba")


def test_overlapping_grants_ended_in_the_order_they_began_or_the_other_leave_nothing_behind(connector, directory):
    first, second = make_grant(person("ana"), "ops"), make_grant(person("ana"), "ops")
    connector.provision(first)
    connector.provision(second)
    connector.revoke(second)
    assert ANA in members(directory, "ops")
    connector.revoke(first)
    assert ANA not in members(directory, "ops")
    assert directory.children(LEDGER) == []


def test_overlapping_grants_on_a_membership_that_existed_before_never_remove_it(connector, directory):
    first, second = make_grant(person("bob"), "ops"), make_grant(person("bob"), "ops")
    connector.provision(first)
    connector.provision(second)
    connector.revoke(first)
    connector.revoke(second)
    assert BOB in members(directory, "ops")


def test_a_member_removed_by_hand_during_the_grant_is_put_back_by_provisioning_again(connector, directory):
    directory.modify(
        group_dn("ops"), {"member": [(ldap3.MODIFY_ADD, [person_dn("carl")])]}
    )  # a groupOfNames keeps one member
    grant = make_grant(person("bob"), "ops")  # bob was a member already: kept
    connector.provision(grant)
    directory.modify(group_dn("ops"), {"member": [(ldap3.MODIFY_DELETE, [person_dn("bob")])]})
    connector.provision(grant)
    assert BOB in members(directory, "ops")
    connector.revoke(grant)
    assert BOB not in members(directory, "ops")  # now the portal is the one who added it


def test_removing_the_last_member_of_a_group_of_names_leaves_a_placeholder_nobody_can_bind_as(connector, directory):
    grant = make_grant(person("ana"), "solo")
    connector.provision(grant)
    directory.modify(group_dn("solo"), {"member": [(ldap3.MODIFY_DELETE, [person_dn("carl")])]})
    connector.revoke(grant)
    assert members(directory, "solo") == {f"cn=jit_nobody,{LEDGER}"}
    assert not connector.is_present(grant)


def test_unique_member_groups_get_the_entry_dn(directory):
    connector = LDAPConnector(_target(directory, member_attribute="uniqueMember"))
    grant = make_grant(person("ana"), "audit")
    connector.provision(grant)
    assert ANA in members(directory, "audit")
    connector.revoke(grant)
    assert members(directory, "audit") == {CARL}


def test_posix_groups_get_the_uid_and_keep_a_uid_that_was_there_before(directory):
    connector = LDAPConnector(_target(directory, member_attribute="memberUid"))
    ana, bob = make_grant(person("ana"), "deploy"), make_grant(person("bob"), "deploy")
    assert connector.provision(ana).credentials["member_value"] == "ana"
    connector.provision(bob)
    assert members(directory, "deploy") == {"ana", "bob"}
    connector.revoke(ana)
    connector.revoke(bob)
    assert members(directory, "deploy") == {"bob"}


def test_extending_writes_the_new_expiry_into_the_ledger(connector, directory):
    grant = make_grant(person("ana"), "ops")
    connector.provision(grant)
    grant.expires_at += datetime.timedelta(hours=1)
    connector.extend(grant)
    with directory.admin() as conn:
        conn.search(f"cn=jit_g{grant.pk},{LEDGER}", "(objectClass=*)", ldap3.BASE, attributes=["description"])
        lines = conn.entries[0].description.values
    assert [line for line in lines if line.startswith("until: ")] == [f"until: {grant.expires_at:%Y-%m-%dT%H:%M:%SZ}"]
    assert connector.extends_in_place


# -- finding the person --------------------------------------------------------------


def test_a_person_no_entry_matches_is_a_clear_permanent_error_and_nothing_is_written(connector, directory):
    with pytest.raises(ConnectorError) as exc:
        connector.provision(make_grant(person("zoe"), "ops"))
    assert exc.value.permanent
    assert f"No entry under {PEOPLE} matches" in exc.value.message and "zoe@example.com" in exc.value.message
    assert directory.children(LEDGER) == []


def test_a_filter_matching_several_entries_is_refused(connector, directory):
    with pytest.raises(ConnectorError, match="Several entries") as exc:
        connector.provision(make_grant(person("dup", email="dup@example.com"), "ops"))
    assert exc.value.permanent
    assert directory.children(LEDGER) == []


def test_a_person_without_the_attribute_the_filter_needs_is_refused_by_name(directory):
    connector = LDAPConnector(_target(directory, user_filter="(uid={employee_id})"))
    with pytest.raises(ConnectorError, match="ana has no employee_id in the portal") as exc:
        connector.provision(make_grant(person("ana"), "ops"))
    assert exc.value.permanent


@pytest.mark.parametrize("email", ["*", "ana@example.com)(mail=*", "*)(uid=*))(|(uid=*", "\\2a"])
def test_filter_characters_in_an_email_are_escaped_and_match_nobody(connector, directory, email):
    with pytest.raises(ConnectorError, match="No entry under"):
        connector.provision(make_grant(person("mallory", email=email), "ops"))
    assert members(directory, "ops") == {BOB}


def test_an_email_with_filter_characters_finds_exactly_its_own_entry(connector, directory):
    grant = make_grant(person("star", email="st*r)(uid=*@example.com"), "ops")
    assert connector.provision(grant).credentials["directory_entry"].lower() == person_dn("star").lower()


def test_the_idp_subject_can_find_the_entry(directory):
    directory.modify(person_dn("carl"), {"employeeNumber": [(ldap3.MODIFY_ADD, ["sub-123"])]})
    connector = LDAPConnector(_target(directory, user_filter="(employeeNumber={subject})"))
    grant = make_grant(person("carl", idp_subject="sub-123"), "ops")
    connector.provision(grant)
    assert CARL in members(directory, "ops")


def test_an_entry_that_changed_under_a_grant_is_refused_at_provisioning_again(connector, directory):
    grant = make_grant(person("ana"), "ops")
    connector.provision(grant)
    grant.user = person("carl")
    with pytest.raises(ConnectorError, match="was provisioned for") as exc:
        connector.provision(grant)
    assert exc.value.permanent
    connector.revoke(grant)  # the failed provisioning's clean-up removes the first membership
    assert ANA not in members(directory, "ops") and CARL not in members(directory, "ops")


# -- groups ----------------------------------------------------------------------------


def test_a_missing_group_is_refused_before_anything_is_written(connector, directory):
    grant = make_grant(person("ana"), "ops", "no-such-group")
    with pytest.raises(ConnectorError, match=f"Group {group_dn('no-such-group')} does not exist") as exc:
        connector.provision(grant)
    assert exc.value.permanent
    assert ANA not in members(directory, "ops")
    assert directory.children(LEDGER) == []


def test_validate_scope_refuses_a_missing_group_and_warns_about_a_group_of_the_wrong_kind(connector, directory):
    with pytest.raises(ConnectorError, match="does not exist") as exc:
        connector.validate_scope({"groups": [group_dn("nope")]})
    assert exc.value.permanent
    warnings = connector.validate_scope({"groups": [group_dn("ops"), group_dn("deploy")]})
    assert len(warnings) == 1 and "deploy" in warnings[0] and "not a groupOfNames" in warnings[0]


def test_a_scope_group_inside_the_ledger_is_refused(connector, directory):
    with pytest.raises(ConnectorError, match="inside the portal's ledger") as exc:
        connector.validate_scope({"groups": [f"cn=jit_g1,{LEDGER}"]})
    assert exc.value.permanent


@pytest.mark.parametrize(
    "scope, fragment",
    [
        ({}, "groups must be a non-empty list"),
        ({"groups": []}, "groups must be a non-empty list"),
        ({"groups": "cn=ops"}, "groups must be a non-empty list"),
        ({"groups": ["not a dn"]}, "is not a valid DN"),
        ({"groups": [group_dn("ops"), group_dn("ops").upper()]}, "the same group twice"),
        ({"groups": [group_dn("ops")], "roles": ["x"]}, "unknown key 'roles'"),
    ],
)
def test_a_malformed_scope_is_refused_with_what_to_fix(connector, scope, fragment):
    assert any(fragment in e for e in LDAPConnector.scope_errors(scope))
    with pytest.raises(ConnectorError, match=fragment) as exc:
        connector.validate_scope(scope)
    assert exc.value.permanent


# -- the ledger and the reconciler --------------------------------------------------------


def test_list_managed_lists_the_ledger_entries_of_this_target_only(directory):
    mine, theirs = LDAPConnector(_target(directory)), LDAPConnector(_target(directory, name="other-ldap"))
    a, b, c = make_grant(person("ana"), "ops"), make_grant(person("carl"), "dba"), make_grant(person("ana"), "dba")
    mine.provision(a)
    mine.provision(b)
    theirs.provision(c)
    assert mine.list_managed() == {f"jit_g{a.pk}", f"jit_g{b.pk}"}
    assert theirs.list_managed() == {f"jit_g{c.pk}"}
    mine.revoke(a)
    assert mine.list_managed() == {f"jit_g{b.pk}"}


def test_members_added_outside_the_portal_are_not_listed_and_nothing_of_the_portal_removes_them(connector, directory):
    directory.modify(group_dn("dba"), {"member": [(ldap3.MODIFY_ADD, [person_dn("ana")])]})
    # Something in the ledger OU that is not ours by name.
    directory.add(
        f"cn=jit_gx,{LEDGER}",
        {"objectClass": ["applicationProcess"], "cn": "jit_gx", "description": ["target: corp-ldap"]},
    )
    assert connector.list_managed() == set()
    grant = make_grant(person("ana"), "dba")
    connector.provision(grant)
    connector.revoke(grant)
    assert ANA in members(directory, "dba")


def test_an_orphan_is_removed_knowing_only_the_grant_id(connector, directory):
    # The reconciler's view of a membership no grant explains: the grant id, nothing else.
    grant = make_grant(person("ana"), "ops", "dba")
    connector.provision(grant)
    (ref,) = connector.list_managed()
    stub = SimpleNamespace(pk=int(ref.removeprefix("jit_g")), scope={}, expires_at=None, starts_at=None, params={})
    connector.revoke(stub)
    assert ANA not in members(directory, "ops") and ANA not in members(directory, "dba")
    assert connector.list_managed() == set()


def test_a_different_prefix_keeps_its_own_names(directory):
    connector = LDAPConnector(_target(directory, prefix="pam_"))
    grant = make_grant(person("ana"), "ops")
    assert connector.provision(grant).external_ref == f"pam_g{grant.pk}"
    assert connector.list_managed() == {f"pam_g{grant.pk}"}
    assert LDAPConnector(_target(directory)).list_managed() == set()


# -- check() and connections --------------------------------------------------------------


def test_check_passes_on_a_good_target_and_leaves_nothing_behind(connector, directory):
    assert connector.check() == []
    assert directory.children(LEDGER) == []


def test_a_wrong_bind_password_is_a_permanent_error_that_names_the_variable_not_the_password(connector, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "wrong-password-xyz")
    with pytest.raises(ConnectorError) as exc:
        connector.check()
    assert exc.value.permanent
    assert "invalid credentials" in exc.value.message and SECRET_ENV in exc.value.message
    assert "wrong-password-xyz" not in exc.value.message


def test_a_missing_bind_password_says_which_variable_to_set(connector, monkeypatch):
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(ConnectorError, match=f"Environment variable {SECRET_ENV}") as exc:
        connector.check()
    assert exc.value.permanent


def test_an_unreachable_server_is_a_transient_error_naming_the_url(directory):
    url = f"ldap://127.0.0.1:{pgcluster.free_port()}"
    connector = LDAPConnector(_target(directory, url=url, timeout=2))
    with pytest.raises(ConnectorError) as exc:
        connector.check()
    assert not exc.value.permanent
    assert f"cannot reach {url}" in exc.value.message
    with pytest.raises(ConnectorError, match="cannot reach"):
        connector.revoke(make_grant(person("ana"), "ops"))


def test_check_names_a_missing_ledger_or_user_base(directory):
    with pytest.raises(ConnectorError, match=f"ledger_dn ou=nope,{sd.SUFFIX} does not exist"):
        LDAPConnector(_target(directory, ledger_dn=f"ou=nope,{sd.SUFFIX}")).check()
    with pytest.raises(ConnectorError, match="user_base ou=nobody"):
        LDAPConnector(_target(directory, user_base=f"ou=nobody,{sd.SUFFIX}")).check()


def test_check_says_when_the_bind_dn_may_not_write_the_ledger(directory):
    # The people OU exists, but the portal's account may only read there.
    connector = LDAPConnector(_target(directory, ledger_dn=PEOPLE))
    with pytest.raises(ConnectorError, match="may not add and delete entries under") as exc:
        connector.check()
    assert exc.value.permanent


def test_a_bind_dn_without_write_rights_on_a_group_gets_a_clear_error(directory):
    directory.add(
        f"cn=locked,{sd.SUFFIX}", {"objectClass": ["groupOfNames"], "cn": "locked", "member": [person_dn("bob")]}
    )
    grant = SimpleNamespace(pk=next(_grant_ids), expires_at=make_grant(None).expires_at,
                            scope={"groups": [f"cn=locked,{sd.SUFFIX}"]}, user=person("ana"))  # fmt: skip
    connector = LDAPConnector(_target(directory))
    with pytest.raises(ConnectorError, match="the bind DN lacks the rights") as exc:
        connector.provision(grant)
    assert exc.value.permanent
    connector.revoke(grant)  # the clean-up after the failure: the ledger line goes, nothing was added
    assert connector.list_managed() == set()


def test_start_tls_with_the_servers_ca_works(directory):
    connector = LDAPConnector(_target(directory, start_tls=True, ca_file=str(directory.tls["ca"])))
    assert connector.check() == []
    assert connector._connection().tls_started


def test_ldaps_with_the_servers_ca_works(directory):
    connector = LDAPConnector(_target(directory, url=directory.ldaps_url, ca_file=str(directory.tls["ca"])))
    grant = make_grant(person("ana"), "ops")
    connector.provision(grant)
    connector.revoke(grant)
    assert not connector.is_present(grant)


@pytest.mark.parametrize("tls", [{"start_tls": True}, {"url": "ldaps"}])
def test_a_certificate_not_signed_by_a_trusted_ca_is_refused(directory, tls):
    config = {"url": directory.ldaps_url} if tls.get("url") else dict(tls)
    connector = LDAPConnector(_target(directory, **config))
    with pytest.raises(ConnectorError) as exc:
        connector.check()
    assert "certificate" in exc.value.message.lower() or "TLS failed" in exc.value.message


def test_get_connector_knows_the_ldap_kind(target):
    assert isinstance(get_connector(target), LDAPConnector)


# -- the catalog ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, fragment",
    [
        ({"url": "http://x"}, "url must be ldap://host[:port] or ldaps://host[:port]"),
        ({"user_filter": "(mail=ana@example.com)"}, "must use at least one of {email}"),
        ({"user_filter": "(mail={mail})"}, "user_filter uses {mail}"),
        ({"user_filter": "mail={email}"}, "is not a valid LDAP filter"),
        ({"member_attribute": "members"}, "member_attribute must be one of member, uniqueMember, memberUid"),
        ({"ledger_dn": "jitportal"}, "ledger_dn 'jitportal' is not a valid DN"),
        ({"start_tls": True, "url": "ldaps://ldap.example.com"}, "start_tls is for ldap:// URLs"),
        ({"timeout": 0}, "timeout must be a number of seconds"),
        ({"bindDN": "cn=x"}, "unknown key 'bindDN'"),
    ],
)
def test_catalog_plan_names_the_field_of_a_bad_ldap_config(db, tmp_path, config, fragment):
    good = {"url": "ldap://ldap.example.com", "bind_dn": "cn=portal,dc=example,dc=com",
            "user_base": "ou=people,dc=example,dc=com", "user_filter": "(mail={email})",
            "ledger_dn": "ou=jitportal,dc=example,dc=com"}  # fmt: skip
    path = tmp_path / "catalog.yaml"
    path.write_text(_catalog({**good, **config}, {"groups": ["cn=ops,ou=groups,dc=example,dc=com"]}))
    with pytest.raises(catalog.CatalogError) as exc:
        catalog.load(path)
    assert any(f"{path}:4: targets.corp.config: " in e and fragment in e for e in exc.value.errors), exc.value.errors


def test_catalog_plan_names_the_field_of_a_bad_ldap_scope(db, tmp_path):
    good = {"url": "ldap://ldap.example.com", "bind_dn": "cn=portal,dc=example,dc=com",
            "user_base": "ou=people,dc=example,dc=com", "user_filter": "(mail={email})",
            "ledger_dn": "ou=jitportal,dc=example,dc=com"}  # fmt: skip
    path = tmp_path / "catalog.yaml"
    path.write_text(_catalog(good, {"group": "cn=ops,ou=groups,dc=example,dc=com"}))
    with pytest.raises(catalog.CatalogError) as exc:
        catalog.load(path)
    assert any("profiles.ops.scope: " in e and "unknown key 'group'" in e for e in exc.value.errors), exc.value.errors
    assert any("profiles.ops.scope: groups must be a non-empty list of group DNs" in e for e in exc.value.errors)


def test_catalog_plan_checks_ldap_groups_on_the_directory(db, tmp_path, directory):
    config = _target(directory).config
    path = tmp_path / "catalog.yaml"
    path.write_text(_catalog(config, {"groups": [group_dn("ops"), group_dn("gone")]}).replace("SECRET", SECRET_ENV))
    with pytest.raises(catalog.CatalogError, match=f"profiles.ops.scope: Group {group_dn('gone')} does not exist"):
        catalog.plan(path)
    path.write_text(_catalog(config, {"groups": [group_dn("ops")]}).replace("SECRET", SECRET_ENV))
    assert catalog.plan(path).warnings == []


def _catalog(config: dict, scope: dict) -> str:
    return textwrap.dedent(f"""\
        targets:
          corp:
            kind: ldap
            config: {json.dumps(config)}
            secret_env: SECRET
        profiles:
          ops:
            title: ops group
            target: corp
            scope: {json.dumps(scope)}
            max_duration: 4h
            approvers: {{group: ops-leads}}
        """)
