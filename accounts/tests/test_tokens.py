"""The API tokens page at /accounts/tokens/: a secret shown once, stored hashed, revoked by its owner only."""

import hashlib
import re

import pytest
from django.urls import reverse

from accounts import tokens
from accounts.models import ApiToken
from audit.models import AuditEvent

URL = "/accounts/tokens/"


def secret_on(page: str) -> str:
    found = re.findall(r'value="(jit_[A-Za-z0-9_-]+)"', page)
    assert len(found) == 1, found
    return found[0]


def test_the_page_needs_a_signed_in_user(client, db):
    response = client.get(URL)
    assert response.status_code == 302
    assert reverse("account_login") in response["Location"]


def test_the_page_has_labelled_fields_and_a_nav_link(client, ana):
    client.force_login(ana)
    page = client.get(URL).content.decode()
    assert '<label for="id_name">Name</label>' in page
    assert '<label for="id_days">Expires in (days)</label>' in page
    assert ">Create token</button>" in page
    assert f'<a href="{URL}">API tokens</a>' in page
    assert "You have no API tokens." in page


def test_a_new_token_is_shown_once_and_stored_hashed(client, ana):
    client.force_login(ana)
    response = client.post(URL, {"name": "deploy job", "days": "30"})
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    secret = secret_on(response.content.decode())
    token = ApiToken.objects.get(user=ana)
    assert token.name == "deploy job"
    assert token.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert token.prefix == secret[:12]
    assert 29 <= (token.expires_at - token.created_at).days <= 30
    # Nowhere in the row, the trail, or the next page view.
    row = {f.name: str(getattr(token, f.attname)) for f in ApiToken._meta.concrete_fields}
    assert not any(secret in value for value in row.values())
    event = AuditEvent.objects.get(action="token.created")
    assert event.actor == ana and secret not in str(event.details)
    assert event.details["prefix"] == token.prefix
    later = client.get(URL).content.decode()
    assert secret not in later
    assert f"{token.prefix}…" in later
    assert tokens.authenticate(secret) == token


@pytest.mark.parametrize(
    ("days", "error"), [("0", "greater than or equal to 1"), ("91", "less than or equal to 90"), ("", "required")]
)
def test_the_expiry_is_required_and_bounded(client, ana, days, error):
    client.force_login(ana)
    page = client.post(URL, {"name": "ci", "days": days}).content.decode()
    assert error in page
    assert not ApiToken.objects.exists()


def test_the_maximum_follows_the_setting(client, ana, settings):
    settings.JIT_API_TOKEN_MAX_DAYS = 7
    client.force_login(ana)
    assert "less than or equal to 7" in client.post(URL, {"name": "ci", "days": "8"}).content.decode()
    with pytest.raises(ValueError):
        tokens.create_token(actor=ana, name="ci", days=8)


def test_owner_revokes_a_token(client, ana):
    token, secret = tokens.create_token(actor=ana, name="ci", days=30)
    client.force_login(ana)
    page = client.get(URL).content.decode()
    assert ">Revoke</button>" in page
    response = client.post(reverse("accounts:token_revoke", args=[token.pk]), follow=True)
    assert response.status_code == 200
    assert "Token ci (" in response.content.decode() and "revoked; it no longer works." in response.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert AuditEvent.objects.filter(action="token.revoked", actor=ana, object_id=str(token.pk)).count() == 1
    with pytest.raises(tokens.InvalidTokenError):
        tokens.authenticate(secret)
    page = response.content.decode()
    assert ">revoked</span>" in page
    assert ">Revoke</button>" not in page
    # Twice changes nothing and records nothing more.
    client.post(reverse("accounts:token_revoke", args=[token.pk]))
    assert AuditEvent.objects.filter(action="token.revoked").count() == 1


def test_revoking_needs_post(client, ana):
    token, _ = tokens.create_token(actor=ana, name="ci", days=30)
    client.force_login(ana)
    assert client.get(reverse("accounts:token_revoke", args=[token.pk])).status_code == 405


def test_only_ones_own_tokens_are_listed_and_revocable(client, ana, eve):
    token, secret = tokens.create_token(actor=ana, name="ana's pipeline", days=30)
    client.force_login(eve)
    page = client.get(URL).content.decode()
    assert "ana&#x27;s pipeline" not in page and token.prefix not in page
    assert client.post(reverse("accounts:token_revoke", args=[token.pk])).status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None
    assert tokens.authenticate(secret) == token
