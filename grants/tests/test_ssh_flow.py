"""An SSH profile through the whole lifecycle: key checked at request, certificate at approval, KRL at revocation."""

import datetime
import subprocess

import pytest
from django.core.management import call_command

from grants import lifecycle
from grants.connectors.ssh import ca as sshca
from grants.models import AccessProfile, Target

from .conftest import JUSTIFICATION

H = datetime.timedelta(hours=1)


@pytest.fixture
def ssh_profile(db, tmp_path, monkeypatch, groups):
    ca = tmp_path / "ca"
    sshca.generate_ca(ca)
    monkeypatch.setenv("JIT_TEST_SSH_CA", str(ca))
    target = Target.objects.create(
        name="hosts", kind="ssh", config={"host": "127.0.0.1", "port": 22}, secret_env="JIT_TEST_SSH_CA"
    )
    profile = AccessProfile.objects.create(
        name="ssh-deploy",
        title="SSH as deploy",
        target=target,
        scope={"principals": ["deploy"]},
        max_duration=4 * H,
        approver_group=groups["db-approvers"],
    )
    profile.requestable_by.add(groups["engineers"])
    return profile


@pytest.fixture
def user_key(tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")], check=True)
    return (tmp_path / "id.pub").read_text()


def test_a_bad_public_key_is_refused_at_request_time_with_a_reason(ana, ssh_profile):
    with pytest.raises(lifecycle.InvalidRequestError) as exc:
        lifecycle.submit_request(
            requester=ana,
            profile=ssh_profile,
            duration=H,
            justification=JUSTIFICATION,
            params={"public_key": "ssh-dss AAAA"},
        )
    assert "public_key" in exc.value.errors


def test_approval_issues_a_certificate_for_the_given_key_and_revocation_publishes_it(
    ana, otto, ssh_profile, user_key, client, tmp_path
):
    req = lifecycle.submit_request(
        requester=ana, profile=ssh_profile, duration=H, justification=JUSTIFICATION, params={"public_key": user_key}
    )
    lifecycle.approve_request(req.pk, actor=otto)
    grant = lifecycle.provision_grant(req.grant.pk)
    assert grant.status == "active" and grant.external_ref == f"serial:{grant.pk}"
    creds = lifecycle.reveal_credentials(grant.pk, actor=ana)
    assert "private_key" not in creds  # the user keeps their own key
    cert = tmp_path / "id-cert.pub"
    cert.write_text(creds["certificate"] + "\n")
    shown = subprocess.run(["ssh-keygen", "-L", "-f", str(cert)], capture_output=True, text=True, check=True).stdout
    assert f"Serial: {grant.pk}" in shown and "deploy" in shown
    lifecycle.revoke_grant(grant.pk, actor=ana, reason="released")
    grant = lifecycle.complete_revocation(grant.pk)
    assert grant.status == "revoked" and grant.verified_at
    krl = client.get(f"/access/ssh/{ssh_profile.target.name}/krl")
    assert krl.status_code == 200
    published = tmp_path / "published.krl"
    published.write_bytes(b"".join(krl.streaming_content) if krl.streaming else krl.content)
    check = subprocess.run(["ssh-keygen", "-Q", "-f", str(published), str(cert)], capture_output=True, text=True)
    assert "REVOKED" in check.stdout


def test_without_a_key_the_portal_generates_one_shown_once(ana, otto, ssh_profile):
    req = lifecycle.submit_request(requester=ana, profile=ssh_profile, duration=H, justification=JUSTIFICATION)
    lifecycle.approve_request(req.pk, actor=otto)
    grant = lifecycle.provision_grant(req.grant.pk)
    creds = lifecycle.reveal_credentials(grant.pk, actor=ana)
    assert "OPENSSH PRIVATE KEY" in creds["private_key"]


def test_ssh_access_cannot_be_extended_in_place_and_says_why(ana, otto, ssh_profile):
    req = lifecycle.submit_request(requester=ana, profile=ssh_profile, duration=H, justification=JUSTIFICATION)
    lifecycle.approve_request(req.pk, actor=otto)
    grant = lifecycle.provision_grant(req.grant.pk)
    with pytest.raises(lifecycle.TransitionError, match="cannot move an expiry in place"):
        lifecycle.request_extension(grant.pk, actor=ana, duration=H, justification=JUSTIFICATION)


def test_the_request_form_offers_a_public_key_field_for_ssh_profiles(client, ana, ssh_profile):
    client.force_login(ana)
    page = client.get("/access/request/").content.decode()
    assert ">SSH public key</label>" in page


def test_the_demo_catalog_loads_an_ssh_profile(db):
    call_command("load_demo")
    assert AccessProfile.objects.get(name="demo-ssh-login").target.kind == "ssh"


@pytest.mark.parametrize("breakage", ["secret_env_unset", "ca_file_missing"])
def test_an_unavailable_krl_tells_anonymous_visitors_nothing_of_the_configuration(
    client, ssh_profile, tmp_path, monkeypatch, caplog, breakage
):
    target = ssh_profile.target
    missing = tmp_path / "nowhere" / "ca"
    if breakage == "secret_env_unset":
        monkeypatch.delenv("JIT_TEST_SSH_CA")
        detail = "JIT_TEST_SSH_CA"
    else:
        monkeypatch.setenv("JIT_TEST_SSH_CA", str(missing))
        detail = str(missing)
    response = client.get(f"/access/ssh/{target.name}/krl")
    assert response.status_code == 503
    assert response.content == b"KRL unavailable.\n"
    # The operator finds the reason in the log.
    (record,) = [r for r in caplog.records if r.name == "grants.connectors.ssh.views"]
    assert detail in record.getMessage() and target.name in record.getMessage()
