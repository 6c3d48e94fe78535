"""`audit verify` walks the hash chain; `audit head` prints (and can append) the current head."""

from django.core.management.base import BaseCommand, CommandError

from audit.log import export_head, head_line, verify


class Command(BaseCommand):
    help = "verify: check the whole audit chain. head [--file F]: print the chain's head line (and append it to F)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["verify", "head"])
        parser.add_argument("--file", default="", help="with head: append the line to this file")

    def handle(self, *args, action, file, **options):
        if action == "head":
            self.stdout.write(export_head(file) if file else head_line())
            return
        result = verify()
        if result.ok:
            self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {result.count} events, head {result.head}."))
            return
        raise CommandError(
            f"Audit chain broken at event #{result.bad_event_id}: {result.reason} "
            f"({result.count} events before it verified; last good hash {result.head})."
        )
