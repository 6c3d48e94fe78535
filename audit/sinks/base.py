"""What every sink kind shares: the record each event becomes, the base class and its error."""

from __future__ import annotations

import json

from django.core.exceptions import ImproperlyConfigured

# The columns a record is made of, in the order `canonical()` takes them, plus the event's id and hash.
FIELDS = ("id", "created_at", "actor_id", "action", "object_type", "object_id", "details", "prev_hash", "hash")


class SinkError(Exception):
    """A delivery that did not arrive; `permanent` when retrying cannot help until someone fixes something."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def as_record(row: dict) -> dict:
    """Return the JSON object a sink receives for one event: enough to check its hash without the database.

    `created_at` is written exactly as the hash covers it (ISO 8601, UTC,
    microseconds); `actor` (the username) is for reading only and not hashed.
    """
    return {
        "id": row["id"],
        "created_at": row["created_at"].isoformat(timespec="microseconds"),
        "actor_id": row["actor_id"],
        "actor": row.get("actor__username") or "",
        "action": row["action"],
        "object_type": row["object_type"],
        "object_id": row["object_id"],
        "details": row["details"],
        "prev_hash": row["prev_hash"],
        "hash": row["hash"],
    }


def dumps(record: dict) -> str:
    """Return one record as one line of JSON (no newline inside: JSON escapes them)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)


class Sink:
    """One configured destination. A kind reads its options in `__init__` and sends a batch in `send`.

    `send` either delivers every record of the batch, in order, or raises
    SinkError; the cursor moves only after it returns, so a batch that failed
    halfway is sent again whole (at least once).
    """

    #: the option names the kind accepts besides `name` and `kind`
    options: tuple[str, ...] = ()
    #: the most records one `send` is given
    batch_size = 500

    def __init__(self, name: str, config: dict):
        self.name = name
        unknown = set(config) - {"name", "kind", "batch_size", *self.options}
        if unknown:
            raise ImproperlyConfigured(f"AUDIT_SINKS {name}: unknown option(s) {', '.join(sorted(unknown))}.")
        self.config = config
        self.batch_size = int(config.get("batch_size", self.batch_size))
        if self.batch_size < 1:
            raise ImproperlyConfigured(f"AUDIT_SINKS {name}: batch_size must be 1 or more.")

    def require(self, option: str) -> str:
        value = self.config.get(option)
        if not value:
            raise ImproperlyConfigured(f"AUDIT_SINKS {self.name}: {option} is required for kind {self.config['kind']}.")
        return value

    def secret(self, option: str) -> str:
        """Return option `X` itself, or the contents of the file named by `X_file`."""
        path = self.config.get(f"{option}_file")
        if path:
            try:
                with open(path, encoding="utf-8") as fh:
                    return fh.read().strip()
            except OSError as exc:
                raise ImproperlyConfigured(f"AUDIT_SINKS {self.name}: {option}_file={path}: {exc.strerror}") from None
        return self.config.get(option, "")

    def send(self, records: list[dict]) -> None:
        raise NotImplementedError
