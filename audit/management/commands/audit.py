"""`audit verify` walks the hash chain and checks it against exported heads; `audit head` prints (and can append)
the current head; `audit pubkey` prints the public key that verifies the heads' signatures."""

import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from audit.heads import HeadFileError, load_public_key, public_key_pem, read_heads, signing_key
from audit.log import GENESIS, export_head, head_line, verify, verify_copy


class Command(BaseCommand):
    help = (
        "verify [--heads FILE] [--public-key FILE]: check the whole audit chain, and that it meets every exported "
        "head (default: AUDIT_HEAD_FILE); verify --from FILE: check an exported copy (JSON Lines of sink records) "
        "on its own, without the database. head [--file F]: print the chain's head line (and append it to F). "
        "pubkey: print the public key of AUDIT_SIGNING_KEY, for whoever keeps and checks the heads."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["verify", "head", "pubkey"])
        parser.add_argument("--file", default="", help="with head: append the line to this file")
        parser.add_argument("--heads", default=None, help="with verify: the exported heads (default: AUDIT_HEAD_FILE)")
        parser.add_argument(
            "--from",
            dest="from_file",
            default="",
            metavar="FILE",
            help="with verify: check this exported copy (JSON Lines, as the sinks write it; - for standard input) "
            "instead of the database",
        )
        parser.add_argument(
            "--public-key",
            default="",
            help="with verify: the public key (PEM, from `audit pubkey`) the heads must be signed with "
            "(default: that of AUDIT_SIGNING_KEY, if set)",
        )

    def handle(self, *args, action, file, heads, public_key, from_file, **options):
        if action == "head":
            self.stdout.write(export_head(file) if file else head_line())
        elif action == "pubkey":
            key = signing_key()
            if key is None:
                raise CommandError(
                    'No signing key: set AUDIT_SIGNING_KEY_FILE (or AUDIT_SIGNING_KEY); README, "The audit trail".'
                )
            self.stdout.write(public_key_pem(key.public_key()).strip())
        elif from_file:
            self.verify_copy(from_file, heads, public_key)
        else:
            self.verify(heads, public_key)

    def verify_copy(self, path, heads_path, public_key_path):
        try:
            heads = read_heads(heads_path) if heads_path else []
            public_key = self.public_key(public_key_path) if heads else None
        except HeadFileError as exc:
            raise CommandError(str(exc)) from None
        try:
            fh = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115 (closed by the `with fh:` below)
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None
        with fh:
            result = verify_copy(fh)
        if not result.ok:
            raise CommandError(
                f"Copy {path} broken at line {result.line_no}: {result.reason} "
                f"({result.count} events before it verified)."
            )
        if not result.count:
            raise CommandError(f"Copy {path} holds no audit records.")
        start = (
            "from the chain's first event"
            if result.starts_after == GENESIS
            else (f"starting after hash {result.starts_after} (the events before #{result.first_id} are not in it)")
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Copy intact: {result.count} events, #{result.first_id} to #{result.last_id}, {start}; "
                f"head {result.head}."
            )
        )
        if result.repeats:
            self.stdout.write(f"{result.repeats} records delivered more than once, each the same as its first copy.")
        met = 0
        for h in sorted(heads, key=lambda h: h.count):
            if public_key is not None and h.signature and not h.signed_by(public_key):
                raise CommandError(
                    f"{h} ({heads_path}, line {h.line_no}): its signature was not made with the "
                    "private key of this public key: the head was altered or forged."
                )
            if reason := result.meets(h):
                raise CommandError(f"Copy {path} does not match {h} ({heads_path}, line {h.line_no}): {reason}.")
            met += bool(h.count) and result.first_id <= h.head_id <= result.last_id
        if heads:
            signed = "signatures checked" if public_key is not None else "signatures not checked: give --public-key"
            self.stdout.write(
                self.style.SUCCESS(
                    f"It meets the {_heads(met)} of {heads_path} within it ({len(heads)} in the file; {signed})."
                )
            )
        else:
            self.stdout.write(
                self.style.WARNING(
                    "A copy checks itself only: give --heads FILE (and --public-key), or compare its head with "
                    "`audit head`, to know that nothing was cut from its end."
                )
            )

    def verify(self, heads_path, public_key_path):
        notes = []
        if heads_path is None and settings.AUDIT_HEAD_FILE and not os.path.exists(settings.AUDIT_HEAD_FILE):
            notes.append(f"AUDIT_HEAD_FILE {settings.AUDIT_HEAD_FILE} does not exist (yet).")
            heads_path = ""
        heads_path = settings.AUDIT_HEAD_FILE if heads_path is None else heads_path
        try:
            heads = read_heads(heads_path) if heads_path else []
            public_key = self.public_key(public_key_path)
        except HeadFileError as exc:
            raise CommandError(str(exc)) from None
        result = verify(heads, public_key=public_key)
        if not result.ok and result.bad_head is not None:
            raise CommandError(
                f"Audit chain does not match {result.bad_head} ({heads_path}, line {result.bad_head.line_no}): "
                f"{result.reason}."
            )
        if not result.ok:
            raise CommandError(
                f"Audit chain broken at event #{result.bad_event_id}: {result.reason} "
                f"({result.count} events before it verified; last good hash {result.head})."
            )
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {result.count} events, head {result.head}."))
        if not heads:
            notes.append(
                "Checked against no exported heads, so a cut tail or a suffix re-hashed by someone who can write "
                "the database would not show: give --heads FILE (the heads AUDIT_HEAD_FILE collects)."
            )
        else:
            last = max(heads, key=lambda h: h.count)
            self.stdout.write(
                self.style.SUCCESS(
                    f"It meets {_heads(len(heads))} exported in {heads_path}, the last at {last.at} "
                    f"(events={last.count})."
                )
            )
            signed = len(heads) - result.unsigned
            if signed and result.signatures_checked:
                self.stdout.write(self.style.SUCCESS(f"Signed: {_heads(signed)}, every signature good."))
            elif signed:
                notes.append(
                    f"{_heads(signed)} signed, but the signatures were not checked: give --public-key FILE "
                    "(what `audit pubkey` prints)."
                )
            if result.unsigned:
                notes.append(
                    f"{_heads(result.unsigned)} unsigned: anyone who can write {heads_path} could have "
                    "made them (set AUDIT_SIGNING_KEY_FILE so the export signs)."
                )
        for note in notes:
            self.stdout.write(self.style.WARNING(note))

    def public_key(self, path):
        if path:
            try:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
            except OSError as exc:
                raise HeadFileError(f"Cannot read the public key {path}: {exc.strerror}.") from None
            try:
                return load_public_key(text)
            except HeadFileError as exc:
                raise HeadFileError(f"{path}: {exc}.") from None
        key = signing_key()
        return key.public_key() if key else None


def _heads(n: int) -> str:
    return f"{n} head" if n == 1 else f"{n} heads"
