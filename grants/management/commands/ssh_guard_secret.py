"""Print the secret one host's session guard signs its reports with (its --report-secret-file)."""

from django.core.management.base import BaseCommand, CommandError

from grants.connectors import ConnectorError, get_connector
from grants.connectors.digest import SessionReportError
from grants.models import Target


class Command(BaseCommand):
    help = "ssh_guard_secret TARGET HOST: print HOST's report secret (derived from the target's guard_secret_env)."

    def add_arguments(self, parser):
        parser.add_argument("target")
        parser.add_argument("host", help="the name the guard reports as (--report-host; default its hostname)")

    def handle(self, *args, target, host, **options):
        found = Target.objects.filter(name=target, kind="ssh").first()
        if found is None:
            raise CommandError(f"No SSH target named {target!r}.")
        try:
            with get_connector(found) as connector:
                self.stdout.write(connector.guard_host_secret(host))
        except (ConnectorError, SessionReportError) as exc:
            raise CommandError(exc.message) from None
