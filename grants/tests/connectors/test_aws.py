"""AWSConnector against moto's AWS server on loopback, spoken to over HTTP like AWS.

moto records IAM and STS state faithfully but evaluates no policy and no
condition: nothing here can show AWS refusing a request at expiry. The tests
check instead what the connector asks for and the IAM state it leaves, which
is what AWS evaluates on each request (see the module docstring of
grants/connectors/aws/connector.py for why those conditions hold on AWS).
"""

import configparser
import datetime
import itertools
import json
from types import SimpleNamespace

import boto3
import pytest

from devtools import pgcluster
from grants.connectors.aws import AWSConnector
from grants.connectors.aws.connector import iso
from grants.connectors.base import ConnectorError

from .moto_support import MotoServer

SECRET_ENV = "JIT_TEST_AWS_ADMIN"
REGION = "eu-west-1"
ACCOUNT = "123456789012"  # moto's default account
SHARED_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/ReadOnly"
_grant_ids = itertools.count(2001)


def _in(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)


def _statement_doc(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _isolated_aws_env(monkeypatch, tmp_path):
    # Never pick up the machine's own AWS configuration or ask an instance
    # metadata service: the tests talk to moto only.
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def aws(moto_server):
    """A fresh moto account with the portal's IAM user, a shared role and two managed policies."""
    moto_server.reset()
    iam = boto3.client(
        "iam",
        endpoint_url=moto_server.url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    iam.create_user(UserName="portal")
    key = iam.create_access_key(UserName="portal")["AccessKey"]
    portal_arn = f"arn:aws:iam::{ACCOUNT}:user/portal"
    trust = _statement_doc({"Effect": "Allow", "Principal": {"AWS": portal_arn}, "Action": "sts:AssumeRole"})
    iam.create_role(RoleName="ReadOnly", AssumeRolePolicyDocument=json.dumps(trust))
    policies = {}
    for name, action in (("S3Read", "s3:Get*"), ("LogsRead", "logs:Get*")):
        document = _statement_doc({"Effect": "Allow", "Action": action, "Resource": "*"})
        policies[name] = iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(document))["Policy"]["Arn"]
    return SimpleNamespace(
        url=moto_server.url,
        iam=iam,
        key_id=key["AccessKeyId"],
        secret=key["SecretAccessKey"],
        portal_arn=portal_arn,
        policies=policies,
    )


@pytest.fixture
def target(aws, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, json.dumps({"aws_access_key_id": aws.key_id, "aws_secret_access_key": aws.secret}))
    config = {"region": REGION, "endpoint_url": aws.url, "account_id": ACCOUNT}
    return SimpleNamespace(name="demo-aws", kind="aws", config=config, secret_env=SECRET_ENV)


@pytest.fixture
def connector(target):
    with AWSConnector(target) as c:
        yield c


@pytest.fixture
def assume_calls(connector):
    """Record the parameters of every sts:AssumeRole the connector sends.

    A botocore event hook on the connector's own session: it observes the
    real request, because moto keeps the session policy but never shows it.
    """
    calls = []
    connector.session.events.register(
        "provide-client-params.sts.AssumeRole", lambda params, **kwargs: calls.append(dict(params))
    )
    return calls


def make_grant(seconds=1200, **scope):
    return SimpleNamespace(pk=next(_grant_ids), expires_at=_in(seconds), scope=scope)


def _caller(credentials, url):
    """Return who AWS (moto) thinks the user's credentials are."""
    sts = boto3.client(
        "sts",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=credentials["access_key_id"],
        aws_secret_access_key=credentials["secret_access_key"],
        aws_session_token=credentials["session_token"],
    )
    return sts.get_caller_identity()


def _inline_policy(aws, role, name="jitportal-grant"):
    return aws.iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]


def _role_names(aws):
    return {r["RoleName"] for page in aws.iam.get_paginator("list_roles").paginate() for r in page["Roles"]}


def _revocations(aws, role="ReadOnly"):
    try:
        return _inline_policy(aws, role, "jit-revoked-sessions")["Statement"]
    except aws.iam.exceptions.NoSuchEntityException:
        return []


# -- a role per grant ---------------------------------------------------------


def test_per_grant_role_credentials_work_as_the_grants_role_session(connector, aws):
    grant = make_grant(inline_policy=_statement_doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}))

    result = connector.provision(grant)

    name = f"jit-g{grant.pk}"
    assert result.external_ref == name
    assert result.expires_at == grant.expires_at
    creds = result.credentials
    identity = _caller(creds, aws.url)
    assert identity["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{name}/{name}"
    assert identity["UserId"].endswith(":" + name)
    assert creds["role_session_arn"] == identity["Arn"]
    assert all(isinstance(value, str) for value in creds.values())  # sealed as strings


def test_credentials_come_as_shell_exports_and_a_credentials_file_profile(connector):
    grant = make_grant(inline_policy=_statement_doc({"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}))

    creds = connector.provision(grant).credentials

    assert creds["env"].splitlines() == [
        f"export AWS_ACCESS_KEY_ID={creds['access_key_id']}",
        f"export AWS_SECRET_ACCESS_KEY={creds['secret_access_key']}",
        f"export AWS_SESSION_TOKEN={creds['session_token']}",
        f"export AWS_REGION={REGION}",
    ]
    parser = configparser.ConfigParser()
    parser.read_string(creds["credentials_file"])
    profile = parser[f"jit-g{grant.pk}"]
    assert dict(profile) == {
        "aws_access_key_id": creds["access_key_id"],
        "aws_secret_access_key": creds["secret_access_key"],
        "aws_session_token": creds["session_token"],
    }


def test_per_grant_role_is_trusted_only_by_the_portal_and_only_until_expiry(connector, aws):
    grant = make_grant(policy_arns=[aws.policies["S3Read"]])

    connector.provision(grant)

    role = aws.iam.get_role(RoleName=f"jit-g{grant.pk}")["Role"]
    assert role["Path"] == "/jitportal/"
    assert role["MaxSessionDuration"] == 3600
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"AWS": aws.portal_arn},
            "Action": "sts:AssumeRole",
            "Condition": {"DateLessThan": {"aws:CurrentTime": iso(grant.expires_at)}},
        }
    ]
    tags = {t["Key"]: t["Value"] for t in role["Tags"]}
    assert tags == {"jitportal:grant": str(grant.pk), "jitportal:expires": iso(grant.expires_at)}


def test_every_allow_of_the_inline_policy_ends_at_expiry_and_a_deny_covers_the_rest(connector, aws):
    scope_policy = _statement_doc(
        {"Sid": "Read", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::orders/*"},
        {
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": "arn:aws:s3:::orders",
            "Condition": {"IpAddress": {"aws:SourceIp": "192.0.2.0/24"}},
        },
        {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"},
    )
    grant = make_grant(inline_policy=scope_policy, policy_arns=[aws.policies["S3Read"]])

    connector.provision(grant)

    until = iso(grant.expires_at)
    read, listing, deny_delete, deny_after = _inline_policy(aws, f"jit-g{grant.pk}")["Statement"]
    assert read["Condition"] == {"DateLessThan": {"aws:CurrentTime": until}}
    assert listing["Condition"] == {
        "IpAddress": {"aws:SourceIp": "192.0.2.0/24"},
        "DateLessThan": {"aws:CurrentTime": until},
    }
    assert "Condition" not in deny_delete  # a deny that lapsed at expiry would be pointless
    # Managed policies cannot carry our condition: this deny ends them too.
    assert deny_after == {
        "Sid": "JitDenyAfterExpiry",
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {"DateGreaterThan": {"aws:CurrentTime": until}},
    }
    attached = aws.iam.list_attached_role_policies(RoleName=f"jit-g{grant.pk}")["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [aws.policies["S3Read"]]
    # The scope the profile holds is not changed by provisioning.
    assert "Condition" not in grant.scope["inline_policy"]["Statement"][0]


def test_managed_policies_alone_still_get_the_deny_after_expiry(connector, aws):
    grant = make_grant(policy_arns=[aws.policies["S3Read"], aws.policies["LogsRead"]])

    connector.provision(grant)

    statements = _inline_policy(aws, f"jit-g{grant.pk}")["Statement"]
    assert [s["Sid"] for s in statements] == ["JitDenyAfterExpiry"]


def test_provisioning_again_brings_the_role_to_the_new_scope_and_expiry(connector, aws):
    grant = make_grant(policy_arns=[aws.policies["S3Read"]])
    connector.provision(grant)
    name = f"jit-g{grant.pk}"
    aws.iam.put_role_policy(
        RoleName=name,
        PolicyName="added-by-hand",
        PolicyDocument=json.dumps(_statement_doc({"Effect": "Allow", "Action": "*", "Resource": "*"})),
    )

    grant.scope = {"policy_arns": [aws.policies["LogsRead"]], "max_session_seconds": 7200}
    grant.expires_at = _in(5400)
    result = connector.provision(grant)

    attached = aws.iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [aws.policies["LogsRead"]]
    assert aws.iam.list_role_policies(RoleName=name)["PolicyNames"] == ["jitportal-grant"]
    role = aws.iam.get_role(RoleName=name)["Role"]
    assert role["MaxSessionDuration"] == 7200
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]["DateLessThan"]["aws:CurrentTime"] == iso(
        grant.expires_at
    )
    assert {t["Key"]: t["Value"] for t in role["Tags"]}["jitportal:expires"] == iso(grant.expires_at)
    assert _role_names(aws) == {"ReadOnly", name}
    assert _caller(result.credentials, aws.url)["Arn"].endswith(f"/{name}/{name}")


def test_revoke_deletes_the_role_with_its_policies_and_can_run_again(connector, aws):
    grant = make_grant(
        policy_arns=[aws.policies["S3Read"]],
        inline_policy=_statement_doc({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}),
    )
    connector.provision(grant)
    assert connector.is_present(grant)

    connector.revoke(grant)
    connector.revoke(grant)

    assert f"jit-g{grant.pk}" not in _role_names(aws)
    assert not connector.is_present(grant)
    # The managed policy itself stays: it belongs to the account, not the grant.
    assert aws.iam.get_policy(PolicyArn=aws.policies["S3Read"])["Policy"]["AttachmentCount"] == 0


def test_revoking_a_grant_that_was_never_provisioned_succeeds(connector, aws):
    connector.revoke(make_grant(policy_arns=[aws.policies["S3Read"]]))
    failed = make_grant(role_arn=SHARED_ROLE_ARN)
    failed.expires_at = None  # the lifecycle clears it when provisioning fails

    connector.revoke(failed)

    assert not connector.is_present(failed)


def test_unknown_managed_policy_is_a_permanent_error(connector, aws):
    grant = make_grant(policy_arns=[f"arn:aws:iam::{ACCOUNT}:policy/NoSuchPolicy"])

    with pytest.raises(ConnectorError, match="NoSuchPolicy") as info:
        connector.provision(grant)

    assert info.value.permanent
    connector.revoke(grant)  # what the failed attempt left behind goes
    assert not connector.is_present(grant)


def test_list_managed_lists_grant_roles_and_nothing_else(connector, aws):
    name = connector.provision(make_grant(policy_arns=[aws.policies["S3Read"]])).external_ref
    trust = json.dumps(
        _statement_doc({"Effect": "Allow", "Principal": {"AWS": aws.portal_arn}, "Action": "sts:AssumeRole"})
    )
    # Look-alikes the reconciler must never delete: wrong path, or not prefix + "g" + digits.
    aws.iam.create_role(RoleName="jit-g77", AssumeRolePolicyDocument=trust)
    for lookalike in ("jit-gadmin", "jit-g12x", "jitg7"):
        aws.iam.create_role(RoleName=lookalike, Path="/jitportal/", AssumeRolePolicyDocument=trust)

    assert connector.list_managed() == {name}


# -- a shared role --------------------------------------------------------------


def test_shared_role_session_is_named_after_the_grant_and_denied_after_expiry(connector, aws, assume_calls):
    grant = make_grant(role_arn=SHARED_ROLE_ARN)

    result = connector.provision(grant)

    name = f"jit-g{grant.pk}"
    assert result.external_ref == f"arn:aws:sts::{ACCOUNT}:assumed-role/ReadOnly/{name}"
    assert _caller(result.credentials, aws.url)["Arn"] == result.external_ref
    (call,) = assume_calls
    assert (call["RoleArn"], call["RoleSessionName"]) == (SHARED_ROLE_ARN, name)
    # A session policy narrows the role: without one in the scope it allows
    # whatever the role allows, until the deny takes over at expiry.
    assert json.loads(call["Policy"]) == _statement_doc(
        {"Sid": "JitRolePermissions", "Effect": "Allow", "Action": "*", "Resource": "*"},
        {
            "Sid": "JitDenyAfterExpiry",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"DateGreaterThan": {"aws:CurrentTime": iso(grant.expires_at)}},
        },
    )
    assert _role_names(aws) == {"ReadOnly"}  # nothing is created for a shared role


def test_scope_session_policy_is_kept_and_the_expiry_deny_appended(connector, assume_calls):
    narrow = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::orders/*"}
    grant = make_grant(role_arn=SHARED_ROLE_ARN, session_policy=_statement_doc(narrow))

    connector.provision(grant)

    statements = json.loads(assume_calls[0]["Policy"])["Statement"]
    assert statements[0] == narrow
    assert statements[1]["Condition"] == {"DateGreaterThan": {"aws:CurrentTime": iso(grant.expires_at)}}


@pytest.mark.parametrize(
    ("seconds", "scope", "expected"),
    [
        (1200, {}, 1200),  # the time left
        (300, {}, 900),  # STS's minimum; the deny statement ends it at expiry
        (3 * 3600, {}, 3600),  # the role's default maximum
        (3 * 3600, {"max_session_seconds": 7200}, 7200),
    ],
    ids=["20-min", "5-min", "3-h", "3-h-max-2-h"],
)
@pytest.mark.parametrize("kind", ["shared-role", "own-role"])
def test_session_duration_is_the_time_left_within_sts_limits(
    connector, aws, assume_calls, kind, seconds, scope, expected
):
    scope = {
        **scope,
        **({"role_arn": SHARED_ROLE_ARN} if kind == "shared-role" else {"policy_arns": [aws.policies["S3Read"]]}),
    }
    if kind == "shared-role" and expected > 3600:
        aws.iam.update_role(RoleName="ReadOnly", MaxSessionDuration=expected)
    grant = make_grant(seconds, **scope)

    creds = connector.provision(grant).credentials

    (call,) = assume_calls
    # ceil(time left) seen a moment after the grant was made.
    assert expected - 2 <= call["DurationSeconds"] <= expected
    lifetime = datetime.datetime.fromisoformat(creds["expiration"].replace("Z", "+00:00")) - _in(0)
    assert abs(lifetime.total_seconds() - call["DurationSeconds"]) < 5


def test_revoke_denies_only_this_grants_sessions_issued_so_far(connector, aws):
    grant = make_grant(role_arn=SHARED_ROLE_ARN)
    connector.provision(grant)
    assert connector.is_present(grant)

    before = _in(0)
    connector.revoke(grant)
    after = _in(0)

    (statement,) = _revocations(aws)
    assert statement["Sid"] == f"RevokeG{grant.pk}"
    assert (statement["Effect"], statement["Action"], statement["Resource"]) == ("Deny", "*", "*")
    condition = statement["Condition"]
    # Only this grant's sessions: aws:userid of a role session is "<role id>:<session name>".
    assert condition["StringLike"] == {"aws:userid": f"*:jit-g{grant.pk}"}
    issued_before = datetime.datetime.fromisoformat(
        condition["DateLessThan"]["aws:TokenIssueTime"].replace("Z", "+00:00")
    )
    assert before < issued_before <= after + datetime.timedelta(seconds=62)  # now, plus clock-skew allowance
    # It only needs to hold until the session's own deny takes over.
    until = datetime.datetime.fromisoformat(condition["DateLessThan"]["aws:CurrentTime"].replace("Z", "+00:00"))
    assert grant.expires_at < until <= grant.expires_at + datetime.timedelta(minutes=5)
    assert not connector.is_present(grant)


def test_revoking_two_grants_of_a_shared_role_keeps_both_denials_and_other_statements(connector, aws):
    first, second = make_grant(role_arn=SHARED_ROLE_ARN), make_grant(role_arn=SHARED_ROLE_ARN)
    for grant in (first, second):
        connector.provision(grant)

    connector.revoke(first)
    connector.revoke(second)
    connector.revoke(first)

    assert [s["Sid"] for s in _revocations(aws)] == [f"RevokeG{first.pk}", f"RevokeG{second.pk}"]
    assert not connector.is_present(first) and not connector.is_present(second)


def test_revoke_prunes_denials_whose_sessions_expired_and_keeps_foreign_statements(connector, aws):
    stale = {
        "Sid": "RevokeG7",
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {
            "StringLike": {"aws:userid": "*:jit-g7"},
            "DateLessThan": {"aws:TokenIssueTime": iso(_in(-7200)), "aws:CurrentTime": iso(_in(-60))},
        },
    }
    foreign = {"Sid": "AddedByHand", "Effect": "Deny", "Action": "iam:*", "Resource": "*"}
    aws.iam.put_role_policy(
        RoleName="ReadOnly",
        PolicyName="jit-revoked-sessions",
        PolicyDocument=json.dumps(_statement_doc(stale, foreign)),
    )
    grant = make_grant(role_arn=SHARED_ROLE_ARN)

    connector.revoke(grant)

    assert [s["Sid"] for s in _revocations(aws)] == ["AddedByHand", f"RevokeG{grant.pk}"]


def test_shared_role_grant_is_not_present_once_expired(connector, aws):
    grant = make_grant(role_arn=SHARED_ROLE_ARN)
    connector.provision(grant)

    grant.expires_at = _in(-1)
    assert not connector.is_present(grant)  # the session policy refuses everything now

    # Past the margin that covers clock skew, a denial would change nothing:
    # none is written, and the role's policy stays small.
    grant.expires_at = _in(-600)
    connector.revoke(grant)
    assert not connector.is_present(grant)
    assert _revocations(aws) == []


def test_revoke_on_a_shared_role_that_was_deleted_succeeds(connector, aws):
    grant = make_grant(role_arn=f"arn:aws:iam::{ACCOUNT}:role/Gone")

    connector.revoke(grant)

    assert not connector.is_present(grant)


def test_expired_grant_gets_no_credentials(connector, aws):
    grant = make_grant(-5, role_arn=SHARED_ROLE_ARN)

    with pytest.raises(ConnectorError, match="expired") as info:
        connector.provision(grant)

    assert info.value.permanent


@pytest.mark.parametrize(
    ("scope", "match"),
    [
        ({}, "needs role_arn, policy_arns or inline_policy"),
        ({"role_arn": "ReadOnly"}, "not an IAM role ARN"),
        ({"role_arn": SHARED_ROLE_ARN, "policy_arns": []}, "does not take policy_arns"),
        ({"policy_arns": ["s3:GetObject"]}, "policy_arns"),
        ({"inline_polcy": {}}, "inline_polcy"),
        ({"inline_policy": {"Statement": []}}, "non-empty Statement"),
        ({"role_arn": SHARED_ROLE_ARN, "max_session_seconds": 60}, "max_session_seconds"),
        (
            {
                "inline_policy": _statement_doc(
                    {
                        "Effect": "Allow",
                        "Action": "*",
                        "Resource": "*",
                        "Condition": {"DateLessThan": {"aws:currenttime": "2099-01-01T00:00:00Z"}},
                    }
                )
            },
            "DateLessThan aws:CurrentTime",
        ),
    ],
)
def test_bad_scope_is_a_permanent_error_and_creates_nothing(connector, aws, scope, match):
    grant = make_grant(**scope)

    with pytest.raises(ConnectorError, match=match) as info:
        connector.provision(grant)

    assert info.value.permanent
    assert _role_names(aws) == {"ReadOnly"}


# -- admin credentials and check() -------------------------------------------


def test_check_passes_with_the_portals_credentials(connector):
    assert connector.check() == []


def test_check_refuses_credentials_of_another_account(target):
    target.config["account_id"] = "999999999999"

    with AWSConnector(target) as connector, pytest.raises(ConnectorError, match="999999999999") as info:
        connector.check()

    assert info.value.permanent


def test_check_raises_a_clear_error_for_an_unreachable_endpoint(target, aws):
    port = pgcluster.free_port()
    target.config["endpoint_url"] = f"http://127.0.0.1:{port}"

    with AWSConnector(target) as connector, pytest.raises(ConnectorError) as info:
        connector.check()

    assert not info.value.permanent
    assert "demo-aws" in info.value.message and str(port) in info.value.message
    assert aws.secret not in info.value.message


def test_admin_secret_that_is_not_json_is_reported_without_echoing_it(target, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, '{"aws_access_key_id": "AKIAEXAMPLE", "aws_secret_access_key": "TopSecret123"')

    with AWSConnector(target) as connector, pytest.raises(ConnectorError) as info:
        connector.check()

    assert info.value.permanent
    assert "TopSecret123" not in info.value.message and "demo-aws" in info.value.message


def test_admin_secret_with_a_key_id_but_no_secret_is_refused(target, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, '{"aws_access_key_id": "AKIAEXAMPLE"}')

    with AWSConnector(target) as connector, pytest.raises(ConnectorError, match="needs both") as info:
        connector.check()

    assert info.value.permanent


def test_default_chain_takes_the_credentials_from_the_environment(target, aws, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "default-chain")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", aws.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws.secret)
    grant = make_grant(policy_arns=[aws.policies["S3Read"]])

    with AWSConnector(target) as connector:
        connector.check()
        connector.provision(grant)

    trust = aws.iam.get_role(RoleName=f"jit-g{grant.pk}")["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"AWS": aws.portal_arn}


def test_default_chain_without_credentials_is_a_permanent_error(target, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "default-chain")

    with AWSConnector(target) as connector, pytest.raises(ConnectorError, match="no usable AWS credentials") as info:
        connector.check()

    assert info.value.permanent


def test_admin_role_is_assumed_first_and_trusted_by_per_grant_roles(target, aws, monkeypatch):
    admin_arn = f"arn:aws:iam::{ACCOUNT}:role/JitPortalAdmin"
    aws.iam.create_role(
        RoleName="JitPortalAdmin",
        AssumeRolePolicyDocument=json.dumps(
            _statement_doc({"Effect": "Allow", "Principal": {"AWS": aws.portal_arn}, "Action": "sts:AssumeRole"})
        ),
    )
    monkeypatch.setenv(
        SECRET_ENV,
        json.dumps({"aws_access_key_id": aws.key_id, "aws_secret_access_key": aws.secret, "role_arn": admin_arn}),
    )
    grant = make_grant(policy_arns=[aws.policies["S3Read"]])

    with AWSConnector(target) as connector:
        identity = connector.session.client("sts", endpoint_url=aws.url).get_caller_identity()
        connector.provision(grant)

    assert identity["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/JitPortalAdmin/jitportal"
    trust = aws.iam.get_role(RoleName=f"jit-g{grant.pk}")["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"AWS": admin_arn}


def test_target_without_region_is_a_permanent_error(target):
    del target.config["region"]

    with AWSConnector(target) as connector, pytest.raises(ConnectorError, match="region") as info:
        connector.check()

    assert info.value.permanent


def test_bad_prefix_is_a_permanent_error(target):
    target.config["prefix"] = "jit g"

    with AWSConnector(target) as connector, pytest.raises(ConnectorError, match="prefix") as info:
        connector.list_managed()

    assert info.value.permanent
