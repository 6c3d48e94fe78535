"""Settings come from the environment and refuse unsafe combinations."""

import os
import subprocess
import sys
from pathlib import Path

BASE = Path(__file__).resolve().parents[1]


def check(**env):
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "OIDC_ISSUER", "OIDC_CLIENT_ID", "DATABASE_URL")}
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=BASE, env={**clean, **env}, capture_output=True, text=True
    )


def test_outside_demo_mode_the_portal_refuses_to_start_without_a_secret_key():
    result = check(OIDC_ISSUER="http://127.0.0.1:9/", OIDC_CLIENT_ID="portal")
    assert result.returncode != 0
    assert "SECRET_KEY (or SECRET_KEY_FILE) must be set outside demo mode" in result.stderr


def test_an_issuer_without_a_client_id_is_refused():
    result = check(OIDC_ISSUER="http://127.0.0.1:9/", SECRET_KEY="x" * 50)
    assert result.returncode != 0
    assert "OIDC_CLIENT_ID" in result.stderr


def test_secret_key_can_come_from_a_file(tmp_path):
    key = tmp_path / "key"
    key.write_text("k" * 50 + "\n")
    result = check(OIDC_ISSUER="http://127.0.0.1:9/", OIDC_CLIENT_ID="portal", SECRET_KEY_FILE=str(key))
    assert result.returncode == 0, result.stderr


def test_demo_mode_needs_nothing_set():
    result = check()
    assert result.returncode == 0, result.stderr


def test_cookies_are_secure_and_http_only_outside_demo_mode():
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "OIDC_ISSUER", "DATABASE_URL")}
    env = {**clean, "OIDC_ISSUER": "http://127.0.0.1:9/", "OIDC_CLIENT_ID": "portal", "SECRET_KEY": "s" * 50, "SESSION_IDLE_TIMEOUT": "900"}
    code = "from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, s.SESSION_COOKIE_AGE, s.SESSION_SAVE_EVERY_REQUEST, s.SOCIALACCOUNT_ONLY)"
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=BASE, env=env, capture_output=True, text=True)
    assert result.stdout.strip().splitlines()[-1].split() == ["True", "True", "True", "900", "True", "True"], result.stderr
