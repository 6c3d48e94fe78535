"""Settings come from the environment and refuse unsafe combinations."""

import os
import subprocess
import sys
from pathlib import Path

BASE = Path(__file__).resolve().parents[1]


# What decides the mode; the suite itself runs with JITPORTAL_DEMO=true (pytest.ini), which these tests leave out.
MODE_VARIABLES = (
    "SECRET_KEY",
    "SECRET_KEY_FILE",
    "OIDC_ISSUER",
    "OIDC_CLIENT_ID",
    "DATABASE_URL",
    "JITPORTAL_DEMO",
    "JITPORTAL_ENV_FILE",
    "DATABASE_PASSWORD",
    "DATABASE_PASSWORD_FILE",
)
IDP = {"OIDC_ISSUER": "http://127.0.0.1:9/", "OIDC_CLIENT_ID": "portal", "SECRET_KEY": "s" * 50}
MODES = "from django.conf import settings as s; print(s.DEMO_MODE, s.SOCIALACCOUNT_ONLY)"


def manage(*args, **env):
    clean = {k: v for k, v in os.environ.items() if k not in MODE_VARIABLES}
    argv = [sys.executable, "manage.py", *args]
    return subprocess.run(argv, cwd=BASE, env={**clean, **env}, capture_output=True, text=True)


def check(**env):
    return manage("check", **env)


def shell(code, **env):
    return manage("shell", "-c", code, **env)


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


def test_without_an_identity_provider_the_portal_refuses_to_start_unless_demo_mode_is_chosen():
    result = check()
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert (
        "No identity provider is configured. Set OIDC_ISSUER (and OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, SECRET_KEY) "
        "for production, or JITPORTAL_DEMO=true for a local demo (make run sets it)." in result.stderr
    )


def test_a_production_environment_that_forgets_the_issuer_does_not_become_a_demo():
    result = check(SECRET_KEY="s" * 50, OIDC_CLIENT_ID="portal", ALLOWED_HOSTS="jit.example.com")
    assert result.returncode != 0
    assert "Set OIDC_ISSUER" in result.stderr


def test_demo_mode_is_an_explicit_choice_and_needs_nothing_else():
    result = shell(MODES, JITPORTAL_DEMO="true")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].split() == ["True", "False"]


def test_demo_mode_and_an_identity_provider_together_are_refused():
    result = check(JITPORTAL_DEMO="true", **IDP)
    assert result.returncode != 0
    assert "JITPORTAL_DEMO=true and OIDC_ISSUER are both set: choose one." in result.stderr


def test_a_misspelt_demo_switch_is_refused_with_the_values_it_takes():
    result = check(JITPORTAL_DEMO="ture")
    assert result.returncode != 0
    assert "JITPORTAL_DEMO must be true or false, not 'ture'." in result.stderr


def test_an_identity_provider_with_the_demo_switch_off_is_production():
    result = shell(MODES, JITPORTAL_DEMO="false", **IDP)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].split() == ["False", "True"]


def test_demo_mode_seals_credentials_with_a_random_key_of_this_checkout_not_a_public_one():
    code = "from django.conf import settings as s; print(s.SECRET_KEY)"
    first, second = shell(code, JITPORTAL_DEMO="true"), shell(code, JITPORTAL_DEMO="true")
    assert first.returncode == 0, first.stderr
    key = first.stdout.strip().splitlines()[-1]
    # The same key in every process of the demo (web, workers, timer), kept in var/ and readable by its owner only.
    assert second.stdout.strip().splitlines()[-1] == key
    key_file = BASE / "var" / "demo-secret-key"
    assert key_file.read_text().strip() == key
    assert key_file.stat().st_mode & 0o077 == 0
    assert len(key) >= 50 and not key.startswith("demo-mode-only-not-secret-")


def test_cookies_are_secure_and_http_only_outside_demo_mode():
    code = (
        "from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
        "s.SESSION_COOKIE_HTTPONLY, s.SESSION_COOKIE_AGE, s.SESSION_SAVE_EVERY_REQUEST, s.SOCIALACCOUNT_ONLY)"
    )
    result = shell(code, SESSION_IDLE_TIMEOUT="900", **IDP)
    assert result.stdout.strip().splitlines()[-1].split() == ["True", "True", "True", "900", "True", "True"], (
        result.stderr
    )


def test_the_database_password_can_come_from_a_file_kept_out_of_the_url(tmp_path):
    # compose.yaml hands PostgreSQL and the portal one secret file; DATABASE_URL names no password.
    password = tmp_path / "db_password"
    password.write_text("pa:ss/w@rd\n")
    code = (
        "from django.conf import settings as s; d = s.DATABASES['default']; print(d['USER'], d['PASSWORD'], d['HOST'])"
    )
    result = shell(
        code, **IDP, DATABASE_URL="postgres://jitportal@db:5432/jitportal", DATABASE_PASSWORD_FILE=str(password)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "jitportal pa:ss/w@rd db"


def test_a_database_password_both_in_the_url_and_in_a_file_is_refused(tmp_path):
    password = tmp_path / "db_password"
    password.write_text("one\n")
    result = check(
        **IDP, DATABASE_URL="postgres://jitportal:two@db:5432/jitportal", DATABASE_PASSWORD_FILE=str(password)
    )
    assert result.returncode != 0
    assert "DATABASE_URL has a password and DATABASE_PASSWORD (or _FILE) is set too: keep one." in result.stderr
