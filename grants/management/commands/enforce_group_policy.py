"""Revoke grants and cancel requests that their holders' current groups no longer allow."""

from django.core.management.base import BaseCommand

from grants.tasks import enforce_group_policy_all


class Command(BaseCommand):
    help = "Check every user with live grants or pending requests against their current groups (reason: policy)."

    def handle(self, *args, **options):
        ended = enforce_group_policy_all()
        for username, kind, pk in ended:
            self.stdout.write(f"{'revoked grant' if kind == 'grant' else 'cancelled request'} #{pk} of {username}")
        grants = sum(1 for e in ended if e[1] == "grant")
        self.stdout.write(f"{grants} grant(s) revoked, {len(ended) - grants} request(s) cancelled.")
