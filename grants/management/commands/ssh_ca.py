"""Create the SSH certificate authority key for an SSH target (never stored in the database)."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from grants.connectors.ssh import ca as sshca


class Command(BaseCommand):
    help = "ssh_ca init PATH: create an ed25519 CA key (mode 0600) and PATH.pub for hosts' TrustedUserCAKeys."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["init"])
        parser.add_argument("path")

    def handle(self, *args, action, path, **options):
        try:
            sshca.generate_ca(Path(path))
        except (FileExistsError, ValueError, OSError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Created {path} and {path}.pub. Point the target's secret_env variable at {path};")
        self.stdout.write(f"hosts trust {path}.pub as TrustedUserCAKeys.")
