"""`manage.py check --deploy`: is the trail safe from the portal's own database role, and are its heads signed?"""

from django.conf import settings
from django.core import checks
from django.db import DatabaseError, connection

from .roles import audit_table_powers

_HOW = (
    "Run the portal as a role that owns nothing, with MIGRATE_DATABASE_URL naming the tables' owner for `migrate` "
    'alone, which then grants the portal\'s role what it needs (README, "The audit trail").'
)


@checks.register(checks.Tags.security, deploy=True)
def check_portal_role(app_configs=None, **kwargs):
    if connection.vendor != "postgresql":
        return []
    try:
        role, powers = audit_table_powers(connection)
    except DatabaseError as exc:
        return [
            checks.Warning(
                f"Could not read what the portal's database role may do to the audit trail: {exc}".strip(),
                hint="Run `manage.py migrate` first, and `check --deploy` with the portal's DATABASE_URL.",
                id="audit.W001",
            )
        ]
    if not powers:
        return []
    return [
        checks.Warning(
            f"The portal's database role {role!r} can rewrite or remove the audit trail: it {'; it '.join(powers)}.",
            hint=_HOW,
            id="audit.W002",
        )
    ]


@checks.register(checks.Tags.security, deploy=True)
def check_owner_credentials(app_configs=None, **kwargs):
    if not settings.MIGRATE_DATABASE_URL:
        return []
    return [
        checks.Warning(
            "MIGRATE_DATABASE_URL is set where the portal runs: whoever takes over a portal process could log in as "
            "the tables' owner and disable the audit trail's triggers.",
            hint="Set MIGRATE_DATABASE_URL (or its _FILE) only in the environment of the job that runs `migrate`.",
            id="audit.W004",
        )
    ]


@checks.register(checks.Tags.security, deploy=True)
def check_signing_key(app_configs=None, **kwargs):
    if settings.AUDIT_SIGNING_KEY:
        return []
    return [
        checks.Warning(
            "Audit heads are exported unsigned, so someone who can write the database and the heads file can make "
            "a rewritten trail verify.",
            hint="Set AUDIT_SIGNING_KEY_FILE to an Ed25519 private key (openssl genpkey -algorithm ed25519 -out FILE), "
            "kept outside the database, and give `manage.py audit pubkey`'s output to whoever checks the heads.",
            id="audit.W003",
        )
    ]
