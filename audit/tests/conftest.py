"""What the trail's own tests share."""

import contextlib


@contextlib.contextmanager
def past_the_trail_triggers(cursor):
    """Let `cursor`'s statements past the trail's append-only triggers, as a superuser can (replica mode skips them).

    SQLite has no such triggers (they are PostgreSQL's, audit migrations 0002 and 0004): nothing to get past.
    """
    postgres = cursor.db.vendor == "postgresql"
    if postgres:
        cursor.execute("SET LOCAL session_replication_role = replica")
    yield
    if postgres:
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")
