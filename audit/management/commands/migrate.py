"""`migrate`, as the tables' owner when MIGRATE_DATABASE_URL is set; then DATABASE_URL's role gets what it needs."""

import environ
from django.conf import settings
from django.core.management import CommandError
from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import DatabaseError, connections

from audit.roles import grant_portal_privileges


class Command(DjangoMigrate):
    help = (
        f"{DjangoMigrate.help} With MIGRATE_DATABASE_URL set, it connects as that role (the tables' owner) and "
        "then grants DATABASE_URL's role what the portal needs: on the audit trail only SELECT and INSERT."
    )

    def handle(self, *args, **options):
        owner_url = getattr(settings, "MIGRATE_DATABASE_URL", "")
        if not owner_url:
            return super().handle(*args, **options)
        connection = connections[options["database"]]
        owner = _owner_credentials(owner_url, connection.settings_dict)
        portal_role = connection.settings_dict["USER"]
        saved = {key: connection.settings_dict.get(key) for key in owner}
        # The same database, another login: the connection reopens with the owner's credentials.
        connection.close()
        connection.settings_dict.update(owner)
        try:
            super().handle(*args, **options)
            try:
                grant_portal_privileges(connection, portal_role)
            except DatabaseError as exc:
                raise CommandError(
                    f"Migrated, but could not give the portal's role {portal_role!r} its privileges: {exc}".strip()
                    + ' (create the role first; README, "The audit trail").'
                ) from None
        finally:
            connection.close()
            connection.settings_dict.update(saved)
        if options["verbosity"] >= 1:
            self.stdout.write(
                f"Ran as {owner['USER']!r} (MIGRATE_DATABASE_URL); the portal's role {portal_role!r} may read and "
                "write the portal's tables, and only read and append to the audit trail."
            )


def _owner_credentials(owner_url: str, portal: dict) -> dict:
    try:
        owner = environ.Env.db_url_config(owner_url)
    except Exception as exc:  # noqa: BLE001 (django-environ raises bare exceptions of several kinds for a bad URL)
        raise CommandError(f"MIGRATE_DATABASE_URL is not a database URL: {exc}") from None
    if "postgresql" not in owner.get("ENGINE", "") or "postgresql" not in portal["ENGINE"]:
        raise CommandError("MIGRATE_DATABASE_URL needs PostgreSQL in it and in DATABASE_URL (roles are PostgreSQL's).")
    for key, what in (("NAME", "database"), ("HOST", "host"), ("PORT", "port")):
        if str(owner.get(key) or "") != str(portal.get(key) or ""):
            raise CommandError(
                f"MIGRATE_DATABASE_URL names {what} {owner.get(key)!r}, DATABASE_URL {portal.get(key)!r}: "
                "they must be the same database; only the user (and password) differ."
            )
    if not owner.get("USER") or owner["USER"] == portal.get("USER"):
        raise CommandError(
            "MIGRATE_DATABASE_URL must log in as the role that owns the tables, another user than DATABASE_URL's "
            f"({portal.get('USER')!r})."
        )
    return {"USER": owner["USER"], "PASSWORD": owner.get("PASSWORD") or ""}
