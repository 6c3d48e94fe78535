"""What an AWS grant's activity says: nothing claimed, and where its use is (CloudTrail, by role session name).

Against moto's AWS server, with test_aws.py's fixtures.
"""

from types import SimpleNamespace

from grants.connectors.aws import AWSConnector

from .test_aws import _isolated_aws_env, aws, connector, make_grant, moto_server, target  # noqa: F401 (fixtures)


def test_a_revoked_grant_names_the_role_session_cloudtrail_has_its_calls_under(connector, aws):  # noqa: F811 (fixtures)
    grant = make_grant(policy_arns=[aws.policies["S3Read"]])
    connector.provision(grant)

    assert connector.revoke_many([grant]) == {}

    kept = connector.take_activity([grant.pk])[grant.pk]
    assert kept["source"] == "cloudtrail" and "statements" not in kept
    assert kept["summary"] == (
        f"unavailable: not read; CloudTrail has the calls of role session jit-g{grant.pk} (about 15 minutes late)"
    )


def test_a_grant_whose_revocation_failed_gets_no_activity(target):  # noqa: F811 (fixture)
    unreachable = SimpleNamespace(**{**vars(target), "config": {**target.config, "endpoint_url": "http://127.0.0.1:9"}})
    grant = make_grant(policy_arns=["arn:aws:iam::123456789012:policy/S3Read"])

    with AWSConnector(unreachable) as down:
        errors = down.revoke_many([grant])

        assert grant.pk in errors and down.take_activity([grant.pk]) == {}
