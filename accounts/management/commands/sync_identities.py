"""Refresh groups, manager and account state from the IdP without anyone signing in."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts import identity


class Command(BaseCommand):
    help = (
        "Refresh from the IdP every identity older than JIT_IDENTITY_SYNC_INTERVAL (what the schedule does "
        "each minute), "
        "or the named users now; deactivate those the IdP no longer accepts."
    )

    def add_arguments(self, parser):
        parser.add_argument("usernames", nargs="*", help="Refresh these users now, however recent their identity.")

    def handle(self, *args, usernames, **options):
        if not usernames:
            counts = identity.sync_identities()
            self.stdout.write(", ".join(f"{n} {outcome}" for outcome, n in counts.items()) + ".")
            return
        users = {u.username: u for u in get_user_model().objects.filter(username__in=usernames)}
        missing = sorted(set(usernames) - set(users))
        if missing:
            raise CommandError(f"No such user: {', '.join(missing)}.")
        for username in usernames:
            result = identity.refresh_identity(users[username])
            self.stdout.write(f"{username}: {result.outcome}" + (f" ({result.message})" if result.message else ""))
