"""`catalog plan FILE` shows what would change; `catalog apply FILE` makes the portal match it."""

from django.core.management.base import BaseCommand, CommandError

from grants import catalog


class Command(BaseCommand):
    help = "Plan or apply a catalog file of targets, policies and access profiles (YAML)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["plan", "apply"])
        parser.add_argument("file")
        parser.add_argument(
            "--revoke-removed",
            action="store_true",
            help="Revoke live grants of profiles removed from the file (reason: policy); otherwise they run to expiry.",
        )

    def handle(self, *args, action, file, revoke_removed, **options):
        try:
            if action == "plan":
                result = catalog.plan(file)
                self.stdout.write(result.render())
                return
            result, revoked = catalog.apply(file, revoke_removed=revoke_removed)
        except catalog.CatalogError as exc:
            for line in exc.errors:
                self.stderr.write(line)
            raise CommandError(f"{len(exc.errors)} error(s) in {file}; nothing was applied.") from None
        if result.empty:
            self.stdout.write(result.render())
            return
        self.stdout.write(result.render())
        for grant_id in revoked:
            self.stdout.write(f"revoking grant #{grant_id} (profile removed from the catalog)")
        self.stdout.write(self.style.SUCCESS(f"Applied {len(result.changes)} change(s) from {file}."))
