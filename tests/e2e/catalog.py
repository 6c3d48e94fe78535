"""Load the end-to-end catalog into the portal database named by DATABASE_URL.

Run by the e2e fixtures with the portal's environment, from the repository root:

    python tests/e2e/catalog.py --pg-host 127.0.0.1 --pg-port 5433

One PostgreSQL target (the throwaway cluster; its admin DSN in
JIT_E2E_PG_DSN) and two access profiles that engineers may request and
db-approvers approve: "appdb read-only", and "appdb critical" (risk high:
approving it needs a step-up, tests/e2e/test_step_up.py). No users: they come from the IdP at
their first sign-in. The groups are created up front so that the profile
can point at them; the auditors group gets its read-only admin
permissions from the grants app's post_migrate hook.
"""

import argparse
import datetime
import os
import sys
from pathlib import Path

from django.conf import settings
from django.db import transaction

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jitportal.settings")

import django  # noqa: E402 (after sys.path.insert: run as a script)

PROFILE_TITLE = "appdb read-only"
CRITICAL_TITLE = "appdb critical"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, required=True)
    parser.add_argument("--secret-env", default="JIT_E2E_PG_DSN")
    args = parser.parse_args(argv)

    django.setup()
    from django.contrib.auth.models import Group, Permission  # noqa: PLC0415 (after django.setup(): it imports the models)

    from grants.models import AccessProfile, Target  # noqa: PLC0415 (after django.setup(): it imports the models)

    with transaction.atomic():
        engineers, _ = Group.objects.get_or_create(name="engineers")
        approvers, _ = Group.objects.get_or_create(name="db-approvers")
        auditors, _ = Group.objects.get_or_create(name=settings.JIT_AUDITOR_GROUP)
        # Normally done by the post_migrate hook; repeated so the suite does
        # not depend on it.
        auditors.permissions.add(
            *Permission.objects.filter(
                codename__in=[
                    "view_auditevent",
                    "view_grant",
                    "view_accessrequest",
                    "view_accessprofile",
                    "view_target",
                    "view_user",
                ]
            )
        )
        target, _ = Target.objects.update_or_create(
            name="e2e-postgres",
            defaults={
                "title": "E2E PostgreSQL (appdb)",
                "kind": "postgres",
                "config": {"host": args.pg_host, "port": args.pg_port, "dbname": "appdb"},
                "secret_env": args.secret_env,
                "description": "The throwaway cluster of the end-to-end suite.",
            },
        )
        profile, _ = AccessProfile.objects.update_or_create(
            name="appdb-readonly",
            defaults={
                "title": PROFILE_TITLE,
                "target": target,
                "scope": {"roles": ["app_readonly"]},
                "default_duration": datetime.timedelta(hours=1),
                "max_duration": datetime.timedelta(hours=4),
                "approver_group": approvers,
                "manager_approves": False,
                "description": "Membership of app_readonly on appdb.",
            },
        )
        profile.requestable_by.set([engineers])
        critical, _ = AccessProfile.objects.update_or_create(
            name="appdb-critical",
            defaults={
                "title": CRITICAL_TITLE,
                "target": target,
                "scope": {"roles": ["app_readonly"]},
                "default_duration": datetime.timedelta(hours=1),
                "max_duration": datetime.timedelta(hours=4),
                "approver_group": approvers,
                "risk": "high",
                "description": "The same role, marked high risk: approving it needs a fresh sign-in (step-up).",
            },
        )
        critical.requestable_by.set([engineers])
    print(
        f"catalog loaded: target {target.pk}, profiles {profile.pk} ({PROFILE_TITLE}), {critical.pk} ({CRITICAL_TITLE})"
    )


if __name__ == "__main__":
    main()
