"""What the benchmarks share: logging, a throwaway portal database next to DATABASE_URL's, percentiles."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bench_urls(database_url: str, db_name: str | None, suffix: str = "_bench") -> tuple[str, str, str]:
    """Return (bench database URL, maintenance URL, bench db name) derived from DATABASE_URL."""
    parts = urlsplit(database_url)
    if parts.scheme not in ("postgres", "postgresql", "pgsql"):
        raise BenchError(f"DATABASE_URL must point to PostgreSQL (got scheme {parts.scheme!r}).")
    original = parts.path.lstrip("/") or "jitportal"
    name = db_name or f"{original}{suffix}"
    if name == original:
        raise BenchError("The benchmark database must not be the one in DATABASE_URL: it is dropped at the end.")
    bench = urlunsplit(parts._replace(path="/" + name))
    # Query options such as ?conn_max_age=60 are Django's (django-environ), not libpq's.
    maintenance = urlunsplit(parts._replace(scheme="postgresql", path="/postgres", query=""))
    return bench, maintenance, name


def libpq_url(url: str) -> str:
    """The same database as a URL libpq accepts (without Django's query options)."""
    return urlunsplit(urlsplit(url)._replace(scheme="postgresql", query=""))


def database_exists(maintenance_url: str, name: str) -> bool:
    import psycopg

    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def create_database(maintenance_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(maintenance_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def write_json(results: dict, path: str) -> None:
    """Write the results as JSON to `path`, or to stdout for `-`."""
    import json

    text = json.dumps(results, indent=2, default=str)
    if path == "-":
        print(text)
    else:
        Path(path).write_text(text + "\n")
        log(f"JSON written to {path}")
