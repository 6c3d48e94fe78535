#!/usr/bin/env python3
"""What one wake-up of the expiry timer and one run of the sweeper cost as active grants grow.

    make benchmark-scheduler                              # 1,000 / 10,000 / 100,000 active grants
    make benchmark-scheduler ARGS="--sizes 1000,10000"    # quicker

1. Creates a portal database next to DATABASE_URL's (its name +
   `_sched`, or `--db-name`) and migrates it.
2. Fills it straight through SQL: one target, 20 profiles, 1,000 people,
   `--history` grants that ended (revoked and verified, over the last 90
   days, as a portal in use has), then active grants up to each of
   `--sizes`, expiring between 15 minutes and 8 hours from now (so none is
   due and none needs its "ends in 10 minutes" reminder: the cost measured is
   what every wake-up pays however little is due). ANALYZE after each fill,
   as autovacuum would.
3. At each size: `--repeat` wake-ups of the real `expiry_timer` loop (its
   `_sleep` replaced by a counter, so each measured interval is one pass of
   the loop) and `--repeat` runs of `grants.tasks.sweep`, in this process;
   per wake-up the number of SQL queries and the milliseconds (p50 / p95),
   and the plan of the costliest query of each.
4. Prints the table; `--json [PATH]` writes the same as JSON. Drops the
   database at the end (`--keep` keeps it).

No target is contacted: nothing is due.
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import django
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import BenchError, bench_urls, create_database, drop_database, log, percentile, run_cli, write_json  # noqa: E402 (after sys.path.insert: the benchmarks' own modules)

PEOPLE, PROFILES = 1000, 20


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="1000,10000,100000",
        help="active grants at each step, increasing (default 1000,10000,100000)",
    )
    parser.add_argument("--history", type=int, default=100_000, help="grants that already ended (default 100000)")
    parser.add_argument("--repeat", type=int, default=20, help="wake-ups measured at each size (default 20)")
    parser.add_argument("--db-name", help="portal database to create (default: DATABASE_URL's name + '_sched')")
    parser.add_argument(
        "--json", nargs="?", const="-", metavar="PATH", help="also write the results as JSON to PATH (or stdout)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the portal database")
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes takes numbers separated by commas, e.g. 1000,10000")
    if not args.sizes or args.sizes != sorted(args.sizes) or args.sizes[0] < 1 or args.history < 0 or args.repeat < 1:
        parser.error("--sizes must be positive and increasing, --history not negative, --repeat positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url:
        raise BenchError("Set DATABASE_URL to the portal's PostgreSQL (make benchmark-scheduler does).")
    bench_url, maintenance_url, bench_db = bench_urls(database_url, args.db_name, suffix="_sched")
    db_created = django_ready = False
    try:
        log(f"portal database {bench_db} (fresh)")
        create_database(maintenance_url, bench_db)
        db_created = True
        os.environ.update(
            {"DATABASE_URL": bench_url, "DJANGO_SETTINGS_MODULE": "jitportal.settings", "JITPORTAL_DEMO": "true"}
        )
        result = subprocess.run(
            [sys.executable, str(REPO / "manage.py"), "migrate", "--noinput", "-v", "0"],
            cwd=REPO,
            env={**os.environ},
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise BenchError(f"migrate failed:\n{result.stdout}{result.stderr}")

        django.setup()
        django_ready = True
        results = run(args)
        print_table(results)
        if args.json:
            write_json(results, args.json)
        return 0
    finally:
        if django_ready:
            connections.close_all()
        if db_created and not args.keep:
            drop_database(maintenance_url, bench_db)
            log("dropped portal database")
        elif db_created:
            log(f"kept portal database {bench_db}")


def fill(cursor, *, count: int, active: bool, profile_ids: list[int], user_ids: list[int]) -> None:
    """Add `count` requests with their grants, active (expiring 15 min to 8 h from now) or ended in the last 90 days."""
    if count <= 0:
        return
    cursor.execute("SELECT coalesce(max(id), 0) FROM grants_accessrequest")
    after = cursor.fetchone()[0]
    # One row per i; `h` spreads the rows (a cheap hash of i).
    cursor.execute(
        """
        INSERT INTO grants_accessrequest
            (requester_id, profile_id, duration, justification, ticket, status, created_at, decided_at,
             decision_comment, step, auto_rule, break_glass, params, scope, max_duration, target_id)
        SELECT u.ids[1 + i %% array_length(u.ids, 1)], p.ids[1 + (i / 7) %% array_length(p.ids, 1)],
               interval '8 hours', 'scheduler benchmark', '', 'approved', t.made, t.made, '', 0, 'bench', false,
               '{}'::jsonb, '{"roles": ["app_readonly"]}'::jsonb, interval '8 hours', %(target)s
        FROM generate_series(1, %(count)s) AS i,
             LATERAL (SELECT CASE WHEN %(active)s THEN now() - interval '1 minute' * ((i * 7919) %% 60)
                                  ELSE now() - interval '1 second' * ((i::bigint * 104729) %% (90 * 86400))
                             END AS made) t,
             (SELECT %(users)s::int[] AS ids) u, (SELECT %(profiles)s::int[] AS ids) p
        """,
        {"count": count, "active": active, "users": user_ids, "profiles": profile_ids, "target": _target_id(cursor)},
    )
    if active:
        cursor.execute(
            """
            INSERT INTO grants_grant (request_id, user_id, profile_id, status, duration, created_at, starts_at,
                                      expires_at, external_ref, sealed_credentials, end_reason, attempts, last_error)
            SELECT r.id, r.requester_id, r.profile_id, 'active', r.duration, r.created_at, r.created_at,
                   now() + interval '15 minutes' + interval '1 second' * ((r.id::bigint * 7919) %% (465 * 60)),
                   'jit_' || r.id, '', '', 0, ''
            FROM grants_accessrequest r WHERE r.id > %s
            """,
            [after],
        )
    else:
        cursor.execute(
            """
            INSERT INTO grants_grant (request_id, user_id, profile_id, status, duration, created_at, starts_at,
                                      expires_at, external_ref, sealed_credentials, end_reason, attempts, last_error,
                                      revoke_requested_at, revoked_at, verified_at, reminded_at)
            SELECT r.id, r.requester_id, r.profile_id, 'revoked', interval '1 hour', r.created_at, r.created_at,
                   r.created_at + interval '1 hour', 'jit_' || r.id, '', 'expired', 1, '',
                   r.created_at + interval '1 hour', r.created_at + interval '1 hour 1 second',
                   r.created_at + interval '1 hour 1 second', r.created_at + interval '50 minutes'
            FROM grants_accessrequest r WHERE r.id > %s
            """,
            [after],
        )
    cursor.execute("ANALYZE grants_accessrequest")
    cursor.execute("ANALYZE grants_grant")


def _target_id(cursor) -> int:
    cursor.execute("SELECT id FROM grants_target ORDER BY id LIMIT 1")
    return cursor.fetchone()[0]


class Wakes:
    """The real timer loop, one pass at a time: its sleep records
    the pass's queries and time, and stops after `repeat`."""

    def __init__(self, repeat: int):
        self.repeat = repeat

    def measure(self) -> list[tuple[int, float, list[dict]]]:
        from grants.management.commands.expiry_timer import Command  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

        passes: list[tuple[int, float, list[dict]]] = []
        command = Command(stdout=io.StringIO(), stderr=io.StringIO())
        started = [time.perf_counter(), 0]

        def sleep(seconds):
            elapsed = time.perf_counter() - started[0]
            passes.append(
                (len(context.captured_queries) - started[1], elapsed * 1000, context.captured_queries[started[1] :])
            )
            if len(passes) >= self.repeat + 1:  # the first pass opens the connection: not counted
                command.running = False
            started[:] = [time.perf_counter(), len(context.captured_queries)]

        command._sleep = sleep
        handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        try:
            with CaptureQueriesContext(connection) as context:
                command.handle(max_sleep=2.0)
        finally:
            signal.signal(signal.SIGINT, handlers[0])
            signal.signal(signal.SIGTERM, handlers[1])
        return passes[1:]


def sweeps(repeat: int) -> list[tuple[int, float, list[dict]]]:
    from grants import tasks  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

    out = []
    tasks.sweep()  # warm-up
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as context:
            started = time.perf_counter()
            tasks.sweep()
            elapsed = (time.perf_counter() - started) * 1000
        out.append((len(context.captured_queries), elapsed, context.captured_queries))
    return out


def slowest(passes) -> tuple[str, float]:
    """The query that took longest over all passes (by Django's own timing), and its milliseconds."""
    best = ("", 0.0)
    for _, _, queries in passes:
        for q in queries:
            ms = float(q["time"]) * 1000
            if ms > best[1]:
                best = (q["sql"], ms)
    return best


def plan(sql: str) -> list[str]:
    if not sql.lstrip().upper().startswith("SELECT"):
        return []
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (COSTS OFF) " + sql.replace("%", "%%"))
        return [row[0] for row in cursor.fetchall()]


def summary(passes) -> dict:
    queries = [n for n, _, _ in passes]
    ms = [t for _, t, _ in passes]
    sql, worst_ms = slowest(passes)
    return {
        "queries": max(queries),
        "queries_min": min(queries),
        "ms_p50": percentile(ms, 50),
        "ms_p95": percentile(ms, 95),
        "slowest_query_ms": worst_ms,
        "slowest_query": sql[:300],
        "slowest_plan": plan(sql),
    }


def run(args) -> dict:
    from django_q.models import OrmQ  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

    from grants.models import AccessProfile, Grant, Target  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

    User = get_user_model()
    users = User.objects.bulk_create(
        User(username=f"sched-{i:04d}", password=make_password(None)) for i in range(PEOPLE)
    )
    target = Target.objects.create(
        name="sched-postgres",
        kind="postgres",
        secret_env="JIT_BENCH_UNUSED",
        config={"host": "127.0.0.1", "port": 1, "dbname": "appdb"},
    )
    profiles = AccessProfile.objects.bulk_create(
        AccessProfile(
            name=f"sched-{i:02d}",
            title=f"Profile {i}",
            target=target,
            scope={"roles": ["app_readonly"]},
            max_duration=datetime.timedelta(hours=8),
        )
        for i in range(PROFILES)
    )
    user_ids, profile_ids = [u.pk for u in users], [p.pk for p in profiles]
    with connection.cursor() as cursor:
        started = time.monotonic()
        fill(cursor, count=args.history, active=False, profile_ids=profile_ids, user_ids=user_ids)
        log(f"history: {args.history:,} ended grants in {time.monotonic() - started:.1f} s")
    steps = []
    have = 0
    for size in args.sizes:
        with connection.cursor() as cursor:
            started = time.monotonic()
            fill(cursor, count=size - have, active=True, profile_ids=profile_ids, user_ids=user_ids)
            have = size
        active = Grant.objects.filter(status=Grant.Status.ACTIVE).count()
        log(f"{active:,} active grants (filled in {time.monotonic() - started:.1f} s); measuring")
        timer, sweep = summary(Wakes(args.repeat).measure()), summary(sweeps(args.repeat))
        OrmQ.objects.all().delete()  # nothing should have been enqueued; if anything was, it does not pile up
        steps.append({"active": active, "timer": timer, "sweep": sweep})
        log(
            f"  timer {timer['queries']} queries {timer['ms_p50']:.1f} ms p50; sweep {sweep['queries']} "
            f"queries {sweep['ms_p50']:.1f} ms p50"
        )
    return {
        "config": {"history": args.history, "repeat": args.repeat, "cpus": os.cpu_count(), "load": os.getloadavg()[0]},
        "steps": steps,
        "flat": flatness(steps),
    }


def flatness(steps: list[dict]) -> dict:
    """Whether the query counts stay the same and the time grows less than threefold from the first size to the last."""
    first, last = steps[0], steps[-1]
    out = {}
    for part in ("timer", "sweep"):
        out[part] = {
            "same queries": first[part]["queries"] == last[part]["queries"],
            "ms ratio last/first": round(last[part]["ms_p50"] / max(first[part]["ms_p50"], 1e-6), 2),
        }
    return out


def print_table(results: dict) -> None:
    cfg = results["config"]
    print()
    print(
        f"Scheduler cost per wake-up: {cfg['history']:,} ended grants besides the active ones, {cfg['repeat']} "
        "wake-ups each, "
        f"{cfg['cpus']} cpus, load {cfg['load']:.2f}"
    )
    print(
        "| active grants | timer queries | timer ms p50 / p95 | sweep queries | sweep ms p50 / p95 | slowest "
        "sweep query ms |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for step in results["steps"]:
        t, s = step["timer"], step["sweep"]
        print(
            f"| {step['active']:,} | {t['queries']} | {t['ms_p50']:.1f} / {t['ms_p95']:.1f} | {s['queries']} | "
            f"{s['ms_p50']:.1f} / {s['ms_p95']:.1f} | {s['slowest_query_ms']:.1f} |"
        )
    last = results["steps"][-1]
    for part in ("timer", "sweep"):
        print(
            f"  slowest {part} query at {last['active']:,}: {last[part]['slowest_query_ms']:.1f} ms, plan: "
            + " / ".join(line.strip() for line in last[part]["slowest_plan"][:4])
        )
    for part, flat in results["flat"].items():
        print(
            f"  {part}: same queries at every size: {'yes' if flat['same queries'] else 'NO'}, "
            f"time last/first: {flat['ms ratio last/first']}x"
        )
    print()


if __name__ == "__main__":
    run_cli(main)
