"""Create the demo users, groups and catalog (idempotent)."""

import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from grants.models import AccessProfile, Target

DEMO_USERS = [
    # username, password, first, last, role
    ("ana", "ana-demo-pass", "Ana", "Requester", "requester (engineer)"),
    ("marc", "marc-demo-pass", "Marc", "Manager", "approver (Ana's manager, database approver)"),
    ("audra", "audra-demo-pass", "Audra", "Auditor", "auditor (read-only admin)"),
    ("admin", "admin-demo-pass", "Ada", "Admin", "admin (Django admin, can revoke)"),
]


class Command(BaseCommand):
    help = "Load demo users and a demo catalog (a PostgreSQL target and its profiles)."

    def add_arguments(self, parser):
        parser.add_argument("--pg-host", default="127.0.0.1")
        parser.add_argument("--pg-port", type=int, default=54329)

    @transaction.atomic
    def handle(self, *args, pg_host, pg_port, **options):
        User = get_user_model()
        engineers, _ = Group.objects.get_or_create(name="engineers")
        db_approvers, _ = Group.objects.get_or_create(name="db-approvers")
        auditors, _ = Group.objects.get_or_create(name=settings.JIT_AUDITOR_GROUP)
        users = {}
        for username, password, first, last, _role in DEMO_USERS:
            user, created = User.objects.get_or_create(
                username=username, defaults={"first_name": first, "last_name": last, "email": f"{username}@example.com"}
            )
            if created:
                user.set_password(password)
                user.save()
            users[username] = user
        users["ana"].groups.add(engineers)
        users["marc"].groups.add(engineers, db_approvers)
        users["audra"].groups.add(auditors)
        User.objects.filter(pk=users["ana"].pk).update(manager=users["marc"])
        User.objects.filter(pk=users["audra"].pk).update(is_staff=True)
        User.objects.filter(pk=users["admin"].pk).update(is_staff=True, is_superuser=True)

        target, _ = Target.objects.update_or_create(
            name="demo-postgres",
            defaults={
                "title": "Demo PostgreSQL (appdb)",
                "kind": "postgres",
                "config": {"host": pg_host, "port": pg_port, "dbname": "appdb"},
                "secret_env": "JIT_DEMO_PG_DSN",
                "description": "A throwaway cluster started by `make run`.",
            },
        )
        # Read-write is high risk: approving it or showing its credentials asks for the password again (step-up).
        profiles = [
            ("appdb-readonly", "appdb read-only", {"roles": ["app_readonly"]}, 1, 8, False, "low"),
            (
                "appdb-readwrite",
                "appdb read-write",
                {"roles": ["app_readwrite"], "owner_role": "app_owner"},
                1,
                4,
                True,
                "high",
            ),
        ]
        for name, title, scope, default_h, max_h, manager, risk in profiles:
            profile, _ = AccessProfile.objects.update_or_create(
                name=name,
                defaults={
                    "title": title,
                    "target": target,
                    "scope": scope,
                    "default_duration": datetime.timedelta(hours=default_h),
                    "max_duration": datetime.timedelta(hours=max_h),
                    "approver_group": db_approvers,
                    "manager_approves": manager,
                    "risk": risk,
                    "description": f"Membership of {', '.join(scope['roles'])} on appdb.",
                },
            )
            profile.requestable_by.set([engineers])
        # SSH needs no server to issue a real certificate: the CA key lives
        # in a file named by JIT_DEMO_SSH_CA (make run creates it).
        ssh, _ = Target.objects.update_or_create(
            name="demo-ssh",
            defaults={
                "title": "Demo SSH hosts",
                "kind": "ssh",
                "config": {"host": "127.0.0.1", "port": 22, "user_hint": "demo"},
                "secret_env": "JIT_DEMO_SSH_CA",
                "description": "Short-lived OpenSSH certificates signed by the demo CA in var/demo-ssh.",
            },
        )
        profile, _ = AccessProfile.objects.update_or_create(
            name="demo-ssh-login",
            defaults={
                "title": "SSH login as demo",
                "target": ssh,
                "scope": {"principals": ["demo"], "options": {"permit-pty": True}},
                "default_duration": datetime.timedelta(hours=1),
                "max_duration": datetime.timedelta(hours=4),
                "approver_group": db_approvers,
                "manager_approves": True,
                "description": "A user certificate for the principal demo; paste your public key or let the portal "
                "make a key pair.",
            },
        )
        profile.requestable_by.set([engineers])
        self.stdout.write(self.style.SUCCESS("Demo users and catalog loaded."))
