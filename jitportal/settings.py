"""Settings for jitportal, read from the environment (django-environ).

The portal runs either with an identity provider (OIDC_ISSUER, ...) or, when
asked with JITPORTAL_DEMO=true (`make run` does), in demo mode: SQLite under
./var, the django-q2 ORM broker on it, local password login and demo users.
With neither it refuses to start. Every variable is listed with its default
in `.env.example` and the README.
"""

import json
import os
import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if env.str("JITPORTAL_ENV_FILE", default=""):
    environ.Env.read_env(env.str("JITPORTAL_ENV_FILE"))
# The demo's files (SQLite database, demo key, target cluster, SSH CA, collected static files); a test
# that starts `make run`'s demo gives it a folder of its own so that the checkout's demo is left alone.
VAR_DIR = Path(env.str("JITPORTAL_VAR_DIR", default=str(BASE_DIR / "var"))).resolve()


def _secret(name, default=None):
    """Return a secret from NAME, or from the file named by NAME_FILE."""
    path = env.str(f"{name}_FILE", default="")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path}: {exc.strerror}") from None
    return env.str(name, default=default)


def _demo_secret_key(path: Path) -> str:
    """Return this checkout's demo key, made at random on first use, so that no demo seals with a public key."""
    try:
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(secrets.token_urlsafe(48) + "\n", encoding="utf-8")
            tmp.chmod(0o600)
            try:
                # The web server, the workers and the timer start together: link()
                # fails if another made the key first, and then everyone reads that one.
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        message = f"Demo mode keeps its SECRET_KEY in {path}: {exc.strerror}; set SECRET_KEY."
        raise ImproperlyConfigured(message) from None
    if not key:
        raise ImproperlyConfigured(f"{path} is empty: delete it (a new demo key is made) or set SECRET_KEY.")
    return key


OIDC_ISSUER = env.str("OIDC_ISSUER", default="")
# Demo mode (local passwords, demo users) is a choice, never what a forgotten
# variable gives: a production portal missing OIDC_ISSUER refuses to start.
_demo = env.str("JITPORTAL_DEMO", default="false").strip().lower()
if _demo not in ("true", "false", "1", "0", "yes", "no"):
    raise ImproperlyConfigured(f"JITPORTAL_DEMO must be true or false, not {_demo!r}.")
DEMO_MODE = _demo in ("true", "1", "yes")
if DEMO_MODE and OIDC_ISSUER:
    raise ImproperlyConfigured(
        "JITPORTAL_DEMO=true and OIDC_ISSUER are both set: choose one. "
        "Unset JITPORTAL_DEMO to sign in with the identity provider, or OIDC_ISSUER for a local demo."
    )
if not DEMO_MODE and not OIDC_ISSUER:
    raise ImproperlyConfigured(
        "No identity provider is configured. Set OIDC_ISSUER (and OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, SECRET_KEY) "
        "for production, or JITPORTAL_DEMO=true for a local demo (make run sets it)."
    )

SECRET_KEY = _secret("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEMO_MODE:
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) must be set outside demo mode.")
    SECRET_KEY = _demo_secret_key(VAR_DIR / "demo-secret-key")

DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEMO_MODE else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
PORTAL_URL = env.str("PORTAL_URL", default="http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "django_q",
    "django_tables2",
    "django_filters",
    "audit",
    "accounts",
    "grants",
    "notifications",
    "api",
    "reports",
]

# The container image sets SERVE_STATIC=true: its web processes serve STATIC_ROOT themselves (whitenoise),
# as no proxy beside them holds the files. Elsewhere nginx serves them (README "Running in production").
SERVE_STATIC = env.bool("SERVE_STATIC", default=False)
MIDDLEWARE = [
    "jitportal.middleware.RequestIdMiddleware",
    "jitportal.middleware.RefuseNulMiddleware",  # PostgreSQL text cannot hold NUL: a 400, not a server error
    "jitportal.middleware.ProbeMiddleware",  # /healthz, /readyz, /metrics: before host checks and the HTTPS redirect
    "django.middleware.security.SecurityMiddleware",
    *(["whitenoise.middleware.WhiteNoiseMiddleware"] if SERVE_STATIC else []),
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.timezones.TimeZoneMiddleware",  # the person's zone (tz cookie) for entering and showing times
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "jitportal.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "jitportal.context_processors.portal",
            ],
        },
    },
]

WSGI_APPLICATION = "jitportal.wsgi.application"

if not env.str("DATABASE_URL", default=""):
    VAR_DIR.mkdir(exist_ok=True)
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
# The password may live apart from the URL, in a file such as a container secret (compose.yaml hands
# PostgreSQL and the portal the same one), so that DATABASE_URL holds nothing secret.
_database_password = _secret("DATABASE_PASSWORD", default="")
if _database_password:
    if DATABASES["default"].get("PASSWORD"):
        raise ImproperlyConfigured("DATABASE_URL has a password and DATABASE_PASSWORD (or _FILE) is set too: keep one.")
    DATABASES["default"]["PASSWORD"] = _database_password
# Keep connections between requests and tasks: a burst of expiries otherwise
# opens a new PostgreSQL session for every task and every timer wake-up.
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, the workers and the timer share one file: wait for
    # the write lock instead of failing with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 20, "transaction_mode": "IMMEDIATE"})

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
ACCOUNT_LOGIN_METHODS = {"username"}
ACCOUNT_SIGNUP_FIELDS = ["username*", "password1*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
ACCOUNT_LOGOUT_ON_GET = False
# With an identity provider configured, the login page offers only it; the
# one emergency path left is the Django admin's own login for a superuser
# created on the command line (README), and every use of it is audited.
SOCIALACCOUNT_ONLY = not DEMO_MODE
SOCIALACCOUNT_ADAPTER = "accounts.adapter.SocialAccountAdapter"
SOCIALACCOUNT_AUTO_SIGNUP = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
SOCIALACCOUNT_LOGIN_ON_GET = False
# The refresh token (SocialToken.token_secret) is what refreshes identity between logins.
SOCIALACCOUNT_STORE_TOKENS = True

OIDC_PROVIDER_ID = "idp"
OIDC_PROVIDER_NAME = env.str("OIDC_PROVIDER_NAME", default="Single sign-on")
OIDC_CLIENT_ID = env.str("OIDC_CLIENT_ID", default="")
OIDC_CLIENT_SECRET = _secret("OIDC_CLIENT_SECRET", default="")
# offline_access asks for a refresh token, with which groups and the account's
# state are refreshed without an interactive login (README "Identity and its refresh").
OIDC_SCOPES = env.list("OIDC_SCOPES", default=["openid", "profile", "email", "groups", "offline_access"])
OIDC_GROUPS_CLAIM = env.str("OIDC_GROUPS_CLAIM", default="groups")
OIDC_MANAGER_CLAIM = env.str("OIDC_MANAGER_CLAIM", default="manager")
# What the manager claim names: the manager's IdP subject (sub), their employee id
# (the claim OIDC_EMPLOYEE_ID_CLAIM), or their verified email address.
OIDC_MANAGER_MATCH = env.str("OIDC_MANAGER_MATCH", default="sub")
OIDC_EMPLOYEE_ID_CLAIM = env.str("OIDC_EMPLOYEE_ID_CLAIM", default="")
if OIDC_MANAGER_MATCH not in ("sub", "employee_id", "email"):
    raise ImproperlyConfigured(f"OIDC_MANAGER_MATCH={OIDC_MANAGER_MATCH!r}: use sub, employee_id or email.")
if OIDC_MANAGER_MATCH == "employee_id" and not OIDC_EMPLOYEE_ID_CLAIM:
    raise ImproperlyConfigured("OIDC_MANAGER_MATCH=employee_id needs OIDC_EMPLOYEE_ID_CLAIM (the claim holding it).")
# An email claim is kept only with email_verified true; false also keeps one whose
# email_verified is missing (IdPs such as Entra ID never send it), never one marked false.
OIDC_REQUIRE_VERIFIED_EMAIL = env.bool("OIDC_REQUIRE_VERIFIED_EMAIL", default=True)
# Groups the portal keeps in step with the IdP; empty means all of them.
OIDC_MANAGED_GROUPS = env.list("OIDC_MANAGED_GROUPS", default=[])
# IdP groups whose members may use the (read-only unless granted more) Django admin.
OIDC_STAFF_GROUPS = env.list("OIDC_STAFF_GROUPS", default=["auditors"])
if not DEMO_MODE and not OIDC_CLIENT_ID:
    raise ImproperlyConfigured("OIDC_ISSUER is set but OIDC_CLIENT_ID is not.")
SOCIALACCOUNT_PROVIDERS = {
    "openid_connect": {
        # allauth leaves PKCE off unless asked; state and nonce it always sends.
        "OAUTH_PKCE_ENABLED": True,
        "SCOPE": OIDC_SCOPES,
        "APPS": [
            {
                "provider_id": OIDC_PROVIDER_ID,
                "name": OIDC_PROVIDER_NAME,
                "client_id": OIDC_CLIENT_ID,
                "secret": OIDC_CLIENT_SECRET,
                "settings": {"server_url": OIDC_ISSUER, "oauth_pkce_enabled": True, "fetch_userinfo": True},
            }
        ]
        if OIDC_ISSUER
        else [],
    }
}

# Idle timeout: the session cookie lives this long after the last request.
SESSION_COOKIE_AGE = env.int("SESSION_IDLE_TIMEOUT", default=8 * 3600)
SESSION_SAVE_EVERY_REQUEST = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "jitportal" / "static"]
STATIC_ROOT = env.str("STATIC_ROOT", default=str(VAR_DIR / "static"))

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEMO_MODE)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

DJANGO_TABLES2_TEMPLATE = "django_tables2/bootstrap5.html"

# Background work. The ORM broker acknowledges tasks, so one survives a
# worker dying halfway; `timeout` stays below `retry` so that a slow task is
# killed before the broker hands it to a second worker.
Q_CLUSTER = {
    "name": "jitportal",
    "orm": "default",
    "workers": env.int("Q_WORKERS", default=4),
    "timeout": env.int("Q_TIMEOUT", default=120),
    "retry": env.int("Q_RETRY", default=180),
    "max_attempts": 3,
    "poll": 0.2,
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 1000,
    "label": "Background tasks",
    # Two lanes in the ORM broker (jitportal/queues.py): provisioning and revocation are taken before
    # notifications, and each lane oldest first. The pusher hands workers only a few tasks ahead
    # (django-q2 takes workers squared), so new access work does not wait behind many already handed out.
    "broker_class": "jitportal.queues.TwoLaneORM",
}
Q_CLUSTER["queue_limit"] = Q_CLUSTER["workers"]
# Tasks whose function starts with one of these go to the later lane (grants.notify.: the old names, one release;
# audit.sinks.: streaming the trail out waits behind access work too).
JIT_QUEUE_LATER = ("notifications.", "grants.notify.", "audit.sinks.")

# The lifecycle's clocks.
JIT_MIN_JUSTIFICATION = env.int("JIT_MIN_JUSTIFICATION", default=20)  # characters, where a profile has no policy
JIT_REQUEST_TIMEOUT = env.int("JIT_REQUEST_TIMEOUT", default=24 * 3600)  # seconds until a pending request lapses
# A person's grants of one profile at most this many seconds apart count as one span for every limit.
JIT_SPAN_GAP = env.int("JIT_SPAN_GAP", default=15 * 60)
JIT_ONCALL_FEED_TTL = env.int(
    "JIT_ONCALL_FEED_TTL", default=300
)  # seconds an on-call iCalendar feed is read from the cache
JIT_REVOKE_FAILING_AFTER = env.int("JIT_REVOKE_FAILING_AFTER", default=5)  # attempts before "revocation failing"
JIT_EXPIRY_BATCH = env.int("JIT_EXPIRY_BATCH", default=25)
# After a full batch (a burst: more is due) a pass takes twice as many, up to this many at once.
JIT_EXPIRY_BATCH_MAX = env.int("JIT_EXPIRY_BATCH_MAX", default=400)
# Failed revocations are retried after 2, 4, 8 ... seconds, at most this many apart.
JIT_REVOKE_RETRY_MAX = env.int("JIT_REVOKE_RETRY_MAX", default=10)
# Identity refresh without a login (accounts/identity.py): the sync job refreshes
# each user whose identity is older than JIT_IDENTITY_SYNC_INTERVAL seconds; a decision
# by API token or Slack first refreshes one older than JIT_IDENTITY_MAX_AGE seconds.
JIT_IDENTITY_SYNC_INTERVAL = env.int("JIT_IDENTITY_SYNC_INTERVAL", default=600)
JIT_IDENTITY_MAX_AGE = env.int("JIT_IDENTITY_MAX_AGE", default=900)
# Step-up (accounts/stepup.py, README "Step-up"): approving, break-glass and revealing credentials on
# profiles of these risks need a sign-in at the IdP at most STEP_UP_MAX_AGE seconds old (sent as max_age),
# with an acr among STEP_UP_ACR_VALUES and an amr among STEP_UP_AMR_VALUES where they are set.
# API tokens and Slack buttons cannot do them unless STEP_UP_ALLOW_API / STEP_UP_ALLOW_SLACK.
STEP_UP_RISKS = env.list("STEP_UP_RISKS", default=["high"])
STEP_UP_MAX_AGE = env.int("STEP_UP_MAX_AGE", default=300)
STEP_UP_ACR_VALUES = env.list("STEP_UP_ACR_VALUES", default=[])
STEP_UP_AMR_VALUES = env.list("STEP_UP_AMR_VALUES", default=[])
STEP_UP_ALLOW_API = env.bool("STEP_UP_ALLOW_API", default=False)
STEP_UP_ALLOW_SLACK = env.bool("STEP_UP_ALLOW_SLACK", default=False)
if STEP_UP_MAX_AGE < 0:
    raise ImproperlyConfigured("STEP_UP_MAX_AGE must be 0 or more seconds.")
# Where the hourly audit head line is appended (empty: the log only).
AUDIT_HEAD_FILE = env.str("AUDIT_HEAD_FILE", default="")
# The Ed25519 private key that signs exported heads (PEM, or base64 of its 32 bytes); never in the database.
AUDIT_SIGNING_KEY = _secret("AUDIT_SIGNING_KEY", default="")
# Where the trail is streamed to (audit/sinks/, README "Audit streaming"): a JSON list of objects, each with
# a unique `name`, a `kind` (syslog, webhook, s3) and that kind's options; AUDIT_SINKS_FILE names a file of it.
try:
    AUDIT_SINKS = json.loads(_secret("AUDIT_SINKS", default="") or "[]")
except ValueError as exc:
    raise ImproperlyConfigured(f"AUDIT_SINKS is not JSON: {exc}") from None
# A failed delivery is tried again after 2, 4, 8 ... seconds, at most this many apart.
AUDIT_SINK_RETRY_MAX = env.int("AUDIT_SINK_RETRY_MAX", default=300)
# After an append a delivery is queued at once, at most one every this many seconds per process (0: only the
# minute schedule delivers).
AUDIT_SINK_NUDGE = env.int("AUDIT_SINK_NUDGE", default=5)
# Seconds one delivery task spends sending batches to one sink before it leaves the rest to the next run.
AUDIT_SINK_BUDGET = env.int("AUDIT_SINK_BUDGET", default=30)
# The role that owns the tables, for `migrate` only (README, "The audit trail"): the portal's own role
# (DATABASE_URL) then may only read and append to the audit trail. Give it to the migrating job alone.
MIGRATE_DATABASE_URL = _secret("MIGRATE_DATABASE_URL", default="")
# Members get read-only admin pages for the trail and the catalog.
JIT_AUDITOR_GROUP = env.str("JIT_AUDITOR_GROUP", default="auditors")
# Portal usernames of the people who manage the IdP's groups: told of each access review removal (empty: the admins).
JIT_IDP_GROUP_MANAGERS = env.list("JIT_IDP_GROUP_MANAGERS", default=[])

# The JSON API (api/views.py) and its personal tokens (accounts/tokens.py).
JIT_API_TOKEN_MAX_DAYS = env.int("JIT_API_TOKEN_MAX_DAYS", default=90)  # longest a token may live
JIT_API_AUTH_FAILURES_PER_MINUTE = env.int("JIT_API_AUTH_FAILURES_PER_MINUTE", default=10)  # bad tokens per client IP
JIT_API_REQUESTS_PER_HOUR = env.int(
    "JIT_API_REQUESTS_PER_HOUR", default=20
)  # access requests made through the API, per user
# The emergency password login at /admin/ (README "Emergency access"): after this many failures for one
# username from one address within a window of this many seconds, every attempt is refused until it ends.
JIT_LOGIN_FAILURES = env.int("JIT_LOGIN_FAILURES", default=5)
JIT_LOGIN_FAILURE_WINDOW = env.int("JIT_LOGIN_FAILURE_WINDOW", default=900)
if JIT_LOGIN_FAILURES < 1 or JIT_LOGIN_FAILURE_WINDOW < 1:
    raise ImproperlyConfigured("JIT_LOGIN_FAILURES and JIT_LOGIN_FAILURE_WINDOW must be 1 or more.")
# Behind a reverse proxy, the header it puts the client's address in (its last
# value is used, the one the proxy appended), e.g. X-Forwarded-For; empty: REMOTE_ADDR.
JIT_CLIENT_IP_HEADER = env.str("JIT_CLIENT_IP_HEADER", default="")
# The API's and the admin login's rate-limit counters live in the cache. Each process has its own
# local-memory cache, so with several web processes use a shared one, e.g.
# CACHE_URL=redis://127.0.0.1:6379/1 (needs the `redis` package).
CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://")}

# Outgoing mail, e.g. smtp+tls://user:password@smtp.example.com:587 ; demo mode prints mail to the console.
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="jitportal <jitportal@localhost>")

# Notifications (notifications/, a module per channel in notifications/channels/).
# Slack: a bot token sends direct messages, posts to the security channel and
# makes approval buttons work (with the signing secret); an incoming webhook
# alone posts channel messages only.
SLACK_WEBHOOK_URL = _secret("SLACK_WEBHOOK_URL", default="")
SLACK_BOT_TOKEN = _secret("SLACK_BOT_TOKEN", default="")
SLACK_SIGNING_SECRET = _secret("SLACK_SIGNING_SECRET", default="")
SLACK_SECURITY_CHANNEL = env.str("SLACK_SECURITY_CHANNEL", default="")  # channel id (C0123...) or #name
SLACK_API_URL = env.str("SLACK_API_URL", default="https://slack.com/api")
SECURITY_EMAIL = env.list("SECURITY_EMAIL", default=[])  # addresses told about break-glass and drift

# Operations: /healthz, /readyz, /metrics (jitportal/ops.py), JSON logs, HTTPS behind a proxy.
# /metrics requires `Authorization: Bearer <METRICS_TOKEN>`. It lists every
# target and its live grants, so without a token it answers 401, unless in
# demo mode or told METRICS_PUBLIC=true (e.g. reachable from Prometheus only).
METRICS_TOKEN = _secret("METRICS_TOKEN", default="")
METRICS_PUBLIC = env.bool("METRICS_PUBLIC", default=False)
# json: one JSON object per line with the request id (jitportal/logging.py); text: the message only.
LOG_FORMAT = env.str("LOG_FORMAT", default="text" if DEMO_MODE else "json")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or text, not {LOG_FORMAT!r}.")
# Behind a reverse proxy that terminates TLS and sets X-Forwarded-Proto (README,
# "Running in production"); never without one, or clients could claim HTTPS.
if env.bool("BEHIND_HTTPS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# A portal with secure cookies is served over HTTPS only: redirect plain
# HTTP and tell browsers (HSTS) never to try it again.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=SESSION_COOKIE_SECURE)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600 if SESSION_COOKIE_SECURE else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=SECURE_HSTS_SECONDS > 0)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = []
if not SECURE_HSTS_PRELOAD:
    # Asking browsers to preload the domain is the domain owner's decision
    # (it binds every subdomain of an apex for good), not the portal's.
    SILENCED_SYSTEM_CHECKS.append("security.W021")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The reports' covering index (grants_grant_created_id includes window_end)
    # is a PostgreSQL optimisation; on SQLite (demo mode) it is a plain index.
    SILENCED_SYSTEM_CHECKS.append("models.W040")
# The Redis broker instead of the ORM one (README: why we recommend against it).
Q_REDIS_URL = env.str("Q_REDIS_URL", default="")
if Q_REDIS_URL:
    Q_CLUSTER = {**{k: v for k, v in Q_CLUSTER.items() if k not in ("orm", "broker_class")}, "redis": Q_REDIS_URL}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "jitportal.logging.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", **({"formatter": "json"} if LOG_FORMAT == "json" else {})}
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # django-q2 gives its logger a text handler of its own unless it has one.
        **({"django-q": {"handlers": ["console"], "propagate": False}} if LOG_FORMAT == "json" else {}),
    },
}
