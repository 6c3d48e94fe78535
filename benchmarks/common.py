"""What the benchmarks share: logging, a throwaway portal database next to DATABASE_URL's, percentiles."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import django
import psycopg
from django.db import connections
from psycopg import sql

from devtools import pgcluster

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
    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def create_database(maintenance_url: str, name: str) -> None:
    with psycopg.connect(maintenance_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(maintenance_url: str, name: str) -> None:
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
    text = json.dumps(results, indent=2, default=str)
    if path == "-":
        print(text)
    else:
        Path(path).write_text(text + "\n")
        log(f"JSON written to {path}")


class PortalWorld:
    """A throwaway portal database and PostgreSQL target cluster, set up for Django in this process.

    `with PortalWorld(database_url, db_name, keep=...) as world:` creates the database next to DATABASE_URL's,
    starts a target cluster (`devtools.pgcluster`) with the demo roles, puts its admin DSN in `target_env`,
    migrates and calls `django.setup()`; on leaving, also on Ctrl-C or an error, it stops what the benchmark
    put in `world.children`, closes `world.held` connections and removes the database and the cluster
    (unless `keep`). `world.child_env` is the environment for `manage.py` child processes.
    """

    def __init__(
        self, database_url: str, db_name: str | None, *, target_env: str, env: dict | None = None, keep: bool = False
    ):
        if not database_url:
            raise BenchError("Set DATABASE_URL to the portal's PostgreSQL (the Makefile's benchmark targets do).")
        self.bench_url, self.maintenance_url, self.bench_db = bench_urls(database_url, db_name)
        self.target_env, self.env, self.keep = target_env, env or {}, keep
        self.children = []  # objects with stop(), stopped first
        self.held: dict = {}  # connections to close

    def __enter__(self) -> PortalWorld:

        if not pgcluster.available():
            raise BenchError("PostgreSQL server programs are missing under /usr/lib/postgresql (`make system-deps`).")
        self.work_dir = Path(tempfile.mkdtemp(prefix="jitbench-"))
        # The target cluster runs as the postgres OS user, which must traverse work_dir (mkdtemp makes it 0700).
        os.chmod(self.work_dir, 0o711)
        self.cluster = pgcluster.DevCluster(self.work_dir / "target")
        self._db_created = self._django_ready = False
        try:
            log(f"portal database {self.bench_db} (fresh), work dir {self.work_dir}")
            create_database(self.maintenance_url, self.bench_db)
            self._db_created = True
            self.cluster.start()
            self.cluster.setup_demo_roles()
            log(f"target cluster on 127.0.0.1:{self.cluster.port}")
            os.environ.update(
                {
                    "DATABASE_URL": self.bench_url,
                    "DJANGO_SETTINGS_MODULE": "jitportal.settings",
                    "JITPORTAL_DEMO": "true",  # a throwaway portal without an identity provider
                    self.target_env: self.cluster.admin_dsn,
                    **self.env,
                }
            )
            self.child_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            result = subprocess.run(
                [sys.executable, str(REPO / "manage.py"), "migrate", "--noinput", "-v", "0"],
                cwd=REPO,
                env=self.child_env,
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise BenchError(f"migrate failed:\n{result.stdout}{result.stderr}")

            django.setup()
            self._django_ready = True
            # django-q logs every enqueue ("Enqueued [jitportal] 17") at INFO.
            logging.getLogger("django-q").setLevel(logging.WARNING)
        except BaseException:
            self.__exit__()
            raise
        return self

    def stop_children(self) -> None:
        while self.children:
            self.children.pop().stop()
        for conn in self.held.values():
            try:
                conn.close()
            except Exception:  # noqa: BLE001 (a connection the target already ended)
                pass
        self.held.clear()

    def __exit__(self, *exc) -> None:
        self.stop_children()
        if self._django_ready:
            connections.close_all()
        if self.keep:
            log(f"kept: portal database {self.bench_db}, target cluster and logs in {self.work_dir} (cluster stopped)")
            self.cluster.stop()
            return
        try:
            self.cluster.stop()
        except Exception as exc:  # noqa: BLE001 (clean up the rest anyway)
            log(f"stopping the target cluster failed: {exc}")
        shutil.rmtree(self.work_dir, ignore_errors=True)
        if self._db_created:
            drop_database(self.maintenance_url, self.bench_db)
        log("cleaned up (portal database dropped, target cluster removed)")


def run_cli(main, *, errors: tuple[type[BaseException], ...] = ()) -> None:
    """Run a benchmark's main(): SIGTERM stops it like Ctrl-C, a BenchError (or one of `errors`) is one line, exit 1."""

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        sys.exit(main())
    except (BenchError, *errors) as exc:
        log(f"error: {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
