"""The test IdP on its own: discovery, and the authorization code flow with PKCE done with plain HTTP.

If these fail, the journey's failures are the IdP's, not the portal's.
"""

import base64
import hashlib
import json
import secrets
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from .harness import CLIENT_ID, CLIENT_SECRET, PASSWORDS

pytestmark = pytest.mark.e2e

SCOPE = "openid profile email groups"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _jwt_payload(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _redirect_uri(portal_port):
    return f"http://127.0.0.1:{portal_port}/accounts/oidc/idp/login/callback/"


def _follow_until(session, response, stop_prefix, limit=10):
    """Follow redirects by hand until one points at `stop_prefix` (not fetched); return (location, last response)."""
    for _ in range(limit):
        if response.status_code not in (302, 303):
            return None, response
        location = urljoin(response.url, response.headers["Location"])
        if location.startswith(stop_prefix):
            return location, response
        response = session.get(location, allow_redirects=False, timeout=10)
    raise AssertionError("too many redirects")


def _start(idp, portal_port, scope=SCOPE):
    """Begin an authorization request; return (session, login page response, state, verifier, nonce)."""
    session = requests.Session()
    verifier = _b64url(secrets.token_bytes(32))
    state, nonce = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    response = session.get(
        idp.issuer + "/auth",
        params={
            "client_id": CLIENT_ID,
            "redirect_uri": _redirect_uri(portal_port),
            "response_type": "code",
            "scope": scope,
            "state": state,
            "nonce": nonce,
            "code_challenge": _b64url(hashlib.sha256(verifier.encode()).digest()),
            "code_challenge_method": "S256",
        },
        allow_redirects=False,
        timeout=10,
    )
    _, page = _follow_until(session, response, _redirect_uri(portal_port))
    assert page.status_code == 200 and 'for="username">Username<' in page.text, page.text[:500]
    return session, page, state, verifier, nonce


def _login_action(page) -> str:
    uid = urlsplit(page.url).path.rstrip("/").split("/")[-1]
    return urljoin(page.url, f"/interaction/{uid}/login")


def test_discovery_document(idp):
    config = requests.get(idp.discovery_url, timeout=10).json()
    assert config["issuer"] == idp.issuer
    assert {"openid", "profile", "email", "groups"} <= set(config["scopes_supported"])
    assert {"groups", "manager", "preferred_username", "email"} <= set(config["claims_supported"])
    assert "S256" in config["code_challenge_methods_supported"]
    assert {"client_secret_basic", "client_secret_post"} <= set(config["token_endpoint_auth_methods_supported"])
    assert config["end_session_endpoint"].startswith(idp.issuer)
    assert config["userinfo_endpoint"].startswith(idp.issuer)


def test_code_flow_with_pkce_gives_groups_and_manager(idp, portal_port):
    session, page, state, verifier, nonce = _start(idp, portal_port)
    response = session.post(
        _login_action(page), data={"username": "ana", "password": PASSWORDS["ana"]}, allow_redirects=False, timeout=10
    )
    callback, _ = _follow_until(session, response, _redirect_uri(portal_port))
    assert callback, "the IdP did not redirect back to the portal"
    query = parse_qs(urlsplit(callback).query)
    assert query["state"] == [state]
    assert query["iss"] == [idp.issuer]

    token = requests.post(
        idp.issuer + "/token",
        data={
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": _redirect_uri(portal_port),
            "code_verifier": verifier,
        },
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=10,
    )
    assert token.status_code == 200, token.text
    tokens = token.json()
    id_token = _jwt_payload(tokens["id_token"])
    assert id_token["sub"] == "ana" and id_token["nonce"] == nonce and id_token["aud"] == CLIENT_ID
    assert id_token["groups"] == ["engineers"] and id_token["manager"] == "marc"  # the manager's subject

    userinfo = requests.get(
        idp.issuer + "/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10
    )
    assert userinfo.status_code == 200, userinfo.text
    claims = userinfo.json()
    assert claims["preferred_username"] == "ana"
    assert claims["email"] == "ana@example.com"
    assert claims["given_name"] == "Ana" and claims["family_name"] == "Requester" and claims["name"] == "Ana Requester"
    assert claims["groups"] == ["engineers"]
    assert claims["manager"] == "marc"
    assert claims["email_verified"] is True


def test_the_code_flow_gives_a_refresh_token_that_reads_the_claims_again(idp, portal_port):
    session, page, _, verifier, _ = _start(idp, portal_port, scope=SCOPE + " offline_access")
    response = session.post(
        _login_action(page), data={"username": "marc", "password": PASSWORDS["marc"]}, allow_redirects=False, timeout=10
    )
    callback, _ = _follow_until(session, response, _redirect_uri(portal_port))
    code = parse_qs(urlsplit(callback).query)["code"][0]
    first = requests.post(
        idp.issuer + "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": _redirect_uri(portal_port),
            "code_verifier": verifier,
        },
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=10,
    ).json()
    assert first.get("refresh_token"), first

    refreshed = requests.post(
        idp.issuer + "/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=10,
    )
    assert refreshed.status_code == 200, refreshed.text
    tokens = refreshed.json()
    assert _jwt_payload(tokens["id_token"])["groups"] == ["engineers", "db-approvers"]
    userinfo = requests.get(
        idp.issuer + "/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10
    ).json()
    assert (userinfo["sub"], userinfo["groups"]) == ("marc", ["engineers", "db-approvers"])


def test_code_without_the_pkce_verifier_is_refused(idp, portal_port):
    session, page, _, _, _ = _start(idp, portal_port)
    response = session.post(
        _login_action(page), data={"username": "marc", "password": PASSWORDS["marc"]}, allow_redirects=False, timeout=10
    )
    callback, _ = _follow_until(session, response, _redirect_uri(portal_port))
    code = parse_qs(urlsplit(callback).query)["code"][0]
    token = requests.post(
        idp.issuer + "/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": _redirect_uri(portal_port)},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=10,
    )
    assert token.status_code == 400 and token.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "username, password, message",
    [
        ("ana", "wrong-password", "Invalid username or password."),
        ("dora", PASSWORDS["dora"], "This account is disabled."),
    ],
)
def test_login_refused(idp, portal_port, username, password, message):
    session, page, _, _, _ = _start(idp, portal_port)
    response = session.post(
        _login_action(page), data={"username": username, "password": password}, allow_redirects=False, timeout=10
    )
    assert response.status_code == 200
    assert message in response.text
    assert "Location" not in response.headers
