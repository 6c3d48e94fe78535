"""A target kind's request fields come from its connector: the form and the API name none of them.

A kind registered here (as a plug-in would be) declares a field; the request
form shows it and the API accepts it, with nothing edited in either. SSH's
`public_key` keeps working the same way.
"""

import datetime
import json
import re

import pytest
from django.core.cache import cache
from django.urls import reverse

from accounts import tokens
from grants import connectors, lifecycle
from grants.connectors import Connector, RequestField
from grants.connectors.ssh import ca as sshca
from grants.models import AccessProfile, AccessRequest, Target

from .conftest import JUSTIFICATION

H = datetime.timedelta(hours=1)
NEW = reverse("grants:request_new")


class BadgeConnector(Connector):
    """A kind that takes the requester's door badge number (a test plug-in: it provisions nothing)."""

    request_fields = {
        "badge": RequestField("Badge number", help_text="The number printed on your badge.", max_length=8)
    }

    def clean_params(self, params: dict) -> dict:
        badge = (params.get("badge") or "").strip()
        if badge and not badge.isdigit():
            raise ValueError({"badge": "A badge number has digits only."})
        return {"badge": badge} if badge else {}


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def badge_profile(db, monkeypatch, groups):
    monkeypatch.setitem(connectors.REGISTRY, "badge", f"{__name__}.BadgeConnector")
    target = Target.objects.create(name="doors", kind="badge", config={})
    profile = AccessProfile.objects.create(
        name="server-room",
        title="Server room door",
        target=target,
        scope={},
        max_duration=4 * H,
        approver_group=groups["db-approvers"],
    )
    profile.requestable_by.add(groups["engineers"])
    return profile


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


def form_data(chosen, **fields):
    return {"profile": chosen.pk, "duration": "30m", "justification": JUSTIFICATION, **fields}


def post_api(client, user, body):
    secret = tokens.create_token(actor=user, name="t", days=1)[1]
    return client.post(
        "/api/v1/requests",
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {secret}"},
    )


def api_request(chosen, **fields):
    return {"profile": chosen.name, "duration_seconds": 1800, "justification": JUSTIFICATION, **fields}


# The request form ------------------------------------------------------------------


def test_a_registered_kinds_field_is_on_the_form_for_its_profiles(client, ana, badge_profile):
    client.force_login(ana)
    page = client.get(NEW).content.decode()
    assert ">Badge number</label>" in page
    assert re.search(r'<input type="text" name="badge"[^>]*data-kinds="badge"', page)
    assert "For badge profiles. The number printed on your badge." in page


def test_a_registered_kinds_field_typed_into_the_form_reaches_the_request(client, ana, badge_profile):
    client.force_login(ana)
    response = client.post(NEW, form_data(badge_profile, badge="4711"))
    assert response.status_code == 302
    assert AccessRequest.objects.get().params == {"badge": "4711"}


def test_the_connectors_refusal_of_its_field_is_shown_on_the_form(client, ana, badge_profile):
    client.force_login(ana)
    response = client.post(NEW, form_data(badge_profile, badge="abc"))
    assert response.status_code == 200
    assert "A badge number has digits only." in response.content.decode()
    assert not AccessRequest.objects.exists()


# The API ---------------------------------------------------------------------------


def test_the_api_lists_a_registered_kinds_field_and_accepts_it(client, ana, badge_profile, ssh_profile):
    secret = tokens.create_token(actor=ana, name="t", days=1)[1]
    listed = client.get("/api/v1/profiles", headers={"Authorization": f"Bearer {secret}"}).json()
    assert {p["name"]: p["request_fields"] for p in listed} == {"server-room": ["badge"], "ssh-deploy": ["public_key"]}
    response = post_api(client, ana, api_request(badge_profile, badge="4711"))
    assert response.status_code == 201, response.json()
    assert AccessRequest.objects.get(pk=response.json()["id"]).params == {"badge": "4711"}


def test_the_api_names_a_kinds_field_that_breaks_its_rules(client, ana, badge_profile):
    too_long = post_api(client, ana, api_request(badge_profile, badge="123456789"))
    assert too_long.status_code == 400
    assert too_long.json()["code"] == "invalid" and too_long.json()["field"] == "badge"
    assert "at most 8 characters" in too_long.json()["message"]
    refused = post_api(client, ana, api_request(badge_profile, badge="abc"))
    assert refused.status_code == 400
    assert refused.json() | {"errors": None} == {
        "code": "invalid",
        "message": "A badge number has digits only.",
        "field": "badge",
        "errors": None,
    }
    assert not AccessRequest.objects.exists()


def test_the_api_ignores_another_kinds_field(client, ana, badge_profile):
    response = post_api(client, ana, api_request(badge_profile, public_key="ssh-ed25519 AAAA"))
    assert response.status_code == 201
    assert AccessRequest.objects.get().params == {}


def test_the_openapi_document_lists_every_registered_kinds_field(client, badge_profile):
    properties = client.get("/api/v1/openapi.json").json()["components"]["schemas"]["RequestIn"]["properties"]
    assert properties["public_key"]["anyOf"][0] == {"type": "string", "maxLength": 10000}
    assert properties["badge"]["description"] == "For badge profiles. The number printed on your badge."


def test_ssh_public_key_through_the_api_still_reaches_the_request(client, ana, ssh_profile):
    _, public = sshca.generate_user_key(comment="ana@laptop")
    response = post_api(client, ana, api_request(ssh_profile, public_key=public))
    assert response.status_code == 201, response.json()
    assert AccessRequest.objects.get().params == {"public_key": sshca.validate_public_key(public)}
    bad = post_api(client, ana, api_request(ssh_profile, public_key="ssh-dss AAAA"))
    assert bad.status_code == 400
    assert bad.json()["field"] == "public_key"


def test_the_lifecycle_takes_a_registered_kinds_field(ana, badge_profile):
    req = lifecycle.submit_request(
        requester=ana, profile=badge_profile, duration=H, justification=JUSTIFICATION, params={"badge": " 42 "}
    )
    assert req.params == {"badge": "42"}
