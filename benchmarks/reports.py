"""Reports at a million grants: CSV export speed and memory, report page latency, `audit verify` speed.

    make benchmark-reports                               # 1,000,000 grants (filling about 10 minutes, measures 4)
    make benchmark-reports ARGS="--grants 100000"        # quicker
    make benchmark-reports ARGS="--keep"                 # keep the filled database ...
    make benchmark-reports ARGS="--reuse"                # ... and measure it again without filling

1. Creates a portal database next to DATABASE_URL's (its name +
   `_reports`, or `--db-name`), migrates it, and fills it straight through
   PostgreSQL's COPY: 5,000 requesters, 40 approvers, 20 targets, 100
   profiles, N grants over the last two years (plus one request in twenty
   that was denied, lapsed or cancelled) with the approvals and the audit
   events the lifecycle writes for each (`request.submitted`,
   `request.approved` or `request.auto_approved`, `grant.scheduled`,
   `grant.provisioned`, `grant.revoke_requested`, `grant.revoked`), hash
   chained exactly as `audit.record` chains them. Then VACUUM ANALYZE and
   a CHECKPOINT.
2. `manage.py audit verify` in its own process, against a signed head
   exported just before: events per second, wall time including the process start.
3. In a fresh process, signed in as an auditor through Django's test client
   (the whole view, middleware and templates; no HTTP socket): each report
   page `--repeat` times after two warm-up loads, p50/p95/max and the number
   of SQL queries.
4. In another fresh process, after one warm-up download (one user's
   grants, as a worker that has served before): the access-history CSV of
   every grant, saved to a temporary file to the last byte; rows per second
   and the process's peak resident memory (`VmHWM`, which includes
   Django itself). The rows and the neutralised formulas are counted in the
   file after the clock stops.

Times are wall-clock on whatever machine runs it; the goals (issues #6 and
#12) are for a 2-core machine: CSV >= 200,000 rows/s under 200 MB (on
PostgreSQL the CSV is written by `COPY ... TO STDOUT`), pages p95 < 200 ms,
the Decisions page over all two years too (it adds up day tallies, which
the fill counts as the migration that made them does).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import django
import psycopg
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.test import Client

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import (  # noqa: E402 (after sys.path.insert: the benchmarks' own modules)
    BenchError,
    bench_urls,
    create_database,
    database_exists,
    drop_database,
    libpq_url,
    log,
    percentile,
    write_json,
)

REQUESTERS, APPROVERS, TARGETS, PROFILES = 5000, 40, 20, 100
YEARS = 2
HOUR = datetime.timedelta(hours=1)
JUSTIFICATIONS = (
    "Investigating slow queries on the orders service after the {ticket} alert",
    "Monthly reconciliation of invoices needs read access to billing tables",
    "Deploying hotfix for {ticket}: need to run the schema migration by hand",
    "On-call: disk usage alert on the primary, checking bloat and vacuum state",
    "Customer escalation {ticket}: verifying what the export job wrote last night",
    "Rotating the service account keys as planned in the change calendar",
    # A requester who tries formula injection: the CSV must neutralise it.
    '=HYPERLINK("http://evil.example","click") needed for {ticket}',
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grants", type=int, default=1_000_000, help="grants to fill in (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=30, help="timed loads of each page (default 30)")
    parser.add_argument("--db-name", help="portal database (default: DATABASE_URL's name + '_reports')")
    parser.add_argument("--seed", type=int, default=6, help="random seed of the fill (default 6)")
    parser.add_argument("--keep", action="store_true", help="keep the filled database for --reuse")
    parser.add_argument(
        "--reuse", action="store_true", help="measure a database a --keep run filled with as many grants"
    )
    parser.add_argument("--skip-verify", action="store_true", help="do not time `audit verify`")
    parser.add_argument(
        "--json", nargs="?", const="-", metavar="PATH", help="also write the results as JSON to PATH (or stdout)"
    )
    parser.add_argument("--child", choices=["pages", "csv"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.grants < 1 or args.repeat < 1:
        parser.error("--grants and --repeat must be positive")
    return args


# -- the fill -------------------------------------------------------------------


class Chain:
    """Builds audit events exactly as `audit.log.record` does, one after another."""

    def __init__(self):
        from audit.log import GENESIS, canonical  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

        self.canonical = canonical
        self.prev = GENESIS
        self.next_id = 1

    def event(self, at, actor_id, action, object_type, object_id, details) -> tuple:
        object_id = str(object_id)
        digest = hashlib.sha256(
            self.canonical(
                created_at=at,
                actor_id=actor_id,
                action=action,
                object_type=object_type,
                object_id=object_id,
                details=details,
                prev_hash=self.prev,
            )
        ).hexdigest()
        row = (
            self.next_id,
            at,
            actor_id,
            action,
            object_type,
            object_id,
            json.dumps(details, sort_keys=True, separators=(",", ":")),
            self.prev,
            digest,
        )
        self.prev = digest
        self.next_id += 1
        return row


def _catalog():
    """Users, groups, targets and profiles through the ORM; return
    (requesters, approvers, profiles) as (id, name) lists."""
    from django.contrib.auth.models import Group  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

    from grants.models import AccessProfile, Target  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

    User = get_user_model()
    approvers_group = Group.objects.create(name="approvers")
    auditors, _ = Group.objects.get_or_create(name=settings.JIT_AUDITOR_GROUP)
    User.objects.bulk_create(
        [User(username=f"u{i:05d}", email=f"u{i:05d}@example.com", password="!") for i in range(1, REQUESTERS + 1)]
        + [User(username=f"a{i:02d}", email=f"a{i:02d}@example.com", password="!") for i in range(1, APPROVERS + 1)]
        + [User(username="auditor", email="auditor@example.com", password="!")],
        batch_size=1000,
    )
    approvers_group.user_set.add(*User.objects.filter(username__startswith="a").exclude(username="auditor"))
    auditors.user_set.add(User.objects.get(username="auditor"))
    targets = Target.objects.bulk_create(
        [
            Target(name=f"t{i:02d}", title=f"Database {i:02d}", kind="postgres", secret_env=f"JIT_T{i:02d}_DSN")
            for i in range(1, TARGETS + 1)
        ]
    )
    profiles = AccessProfile.objects.bulk_create(
        [
            AccessProfile(
                name=f"p{i:03d}",
                title=f"Profile {i:03d}",
                target=targets[i % TARGETS],
                approver_group=approvers_group,
                scope={"roles": ["app_readonly"]},
                max_duration=8 * HOUR,
            )
            for i in range(1, PROFILES + 1)
        ]
    )
    requesters = list(User.objects.filter(username__startswith="u").order_by("pk").values_list("pk", "username"))
    approvers = list(
        User.objects.filter(username__startswith="a")
        .exclude(username="auditor")
        .order_by("pk")
        .values_list("pk", "username")
    )
    return requesters, approvers, [(p.pk, p.name, p.target.name) for p in profiles]


def fill(bench_url: str, n: int, seed: int) -> dict:
    """Fill the portal database with `n` grants and everything around them; return counts."""
    rng = random.Random(seed)
    requesters, approvers, profiles = _catalog()
    chain = Chain()
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    slots = n * 20 // 19 + 20  # one request in twenty is not granted
    start = now - datetime.timedelta(days=365 * YEARS)
    step = (now - start - 9 * HOUR) / slots
    counts = {"requests": 0, "grants": 0, "approvals": 0, "events": 0}
    chunk = {"requests": [], "grants": [], "approvals": [], "events": []}
    columns = {
        "requests": (
            "grants_accessrequest",
            "id, requester_id, profile_id, duration, justification, ticket, status, created_at, decided_at, "
            "decided_by_id, decision_comment, step, auto_rule, starts_at, break_glass, extends_id, bundle, params",
        ),
        "grants": (
            "grants_grant",
            "id, request_id, not_before, user_id, profile_id, status, duration, created_at, starts_at, expires_at, "
            "external_ref, sealed_credentials, credentials_seen_at, end_reason, ended_by_id, "
            "revoke_requested_at, revoked_at, "
            "verified_at, attempts, next_attempt_at, last_error, reminded_at",
        ),
        "approvals": ("grants_approval", "request_id, step, approver_id, comment, created_at"),
        "events": (
            "audit_auditevent",
            "id, created_at, actor_id, action, object_type, object_id, details, prev_hash, hash",
        ),
    }

    def flush(conn):
        for name, rows in chunk.items():
            if not rows:
                continue
            table, cols = columns[name]
            with conn.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            counts[name] += len(rows)
            rows.clear()
        conn.commit()

    grant_id = 0
    started = time.monotonic()
    with psycopg.connect(libpq_url(bench_url)) as conn:
        for req_id in range(1, slots + 1):
            created = start + step * req_id + datetime.timedelta(seconds=rng.randrange(0, 60))
            user_id, username = rng.choice(requesters)
            profile_id, profile, target = rng.choice(profiles)
            who = {"profile": profile, "target": target, "user": username}
            duration = rng.choice((1, 1, 2, 4, 8)) * HOUR
            ticket = f"INC-{rng.randrange(10000, 99999)}" if rng.random() < 0.6 else ""
            justification = rng.choice(JUSTIFICATIONS).format(ticket=ticket or "the incident")
            granted = req_id % 20 != 0
            if granted and grant_id >= n:
                continue
            chunk["events"].append(
                chain.event(
                    created,
                    user_id,
                    "request.submitted",
                    "accessrequest",
                    req_id,
                    {
                        **who,
                        "duration_seconds": int(duration.total_seconds()),
                        "justification": justification,
                        "ticket": ticket,
                        "starts_at": None,
                        "break_glass": False,
                        "bundle": None,
                    },
                )
            )
            decided = created + datetime.timedelta(seconds=int(rng.expovariate(1 / 600)) + 1)
            roll = rng.random()
            decided_by = auto_rule = None
            comment = ""
            if not granted:
                status = rng.choice(("denied", "lapsed", "cancelled"))
                if status == "denied":
                    decided_by, approver = rng.choice(approvers)
                    comment = "Use the read-only profile for this"
                    chunk["events"].append(
                        chain.event(
                            decided, decided_by, "request.denied", "accessrequest", req_id, {**who, "comment": comment}
                        )
                    )
                else:
                    chunk["events"].append(
                        chain.event(
                            decided,
                            None if status == "lapsed" else user_id,
                            f"request.{status}",
                            "accessrequest",
                            req_id,
                            who,
                        )
                    )
                chunk["requests"].append(
                    (
                        req_id,
                        user_id,
                        profile_id,
                        duration,
                        justification,
                        ticket,
                        status,
                        created,
                        decided,
                        decided_by,
                        comment,
                        0,
                        "",
                        None,
                        False,
                        None,
                        None,
                        "{}",
                    )
                )
                continue
            status = "approved"
            if roll < 0.15:
                auto_rule = "low-risk-read"
                chunk["events"].append(
                    chain.event(
                        decided, None, "request.auto_approved", "accessrequest", req_id, {**who, "rule": auto_rule}
                    )
                )
            else:
                decided_by, approver = rng.choice(approvers)
                chunk["approvals"].append((req_id, 0, decided_by, "", decided))
                chunk["events"].append(
                    chain.event(
                        decided,
                        decided_by,
                        "request.approved",
                        "accessrequest",
                        req_id,
                        {**who, "comment": "", "step": 1, "steps": 1},
                    )
                )
            chunk["requests"].append(
                (
                    req_id,
                    user_id,
                    profile_id,
                    duration,
                    justification,
                    ticket,
                    status,
                    created,
                    decided,
                    decided_by,
                    "",
                    0,
                    auto_rule or "",
                    None,
                    False,
                    None,
                    None,
                    "{}",
                )
            )
            grant_id += 1
            chunk["events"].append(
                chain.event(
                    decided,
                    decided_by,
                    "grant.scheduled",
                    "grant",
                    grant_id,
                    {**who, "request": req_id, "not_before": None},
                )
            )
            started_at = decided + datetime.timedelta(seconds=2)
            expires = started_at + duration
            ref = f"jit_g{grant_id}"
            end_reason = ended_by = revoke_requested = revoked = verified = None
            g_status, error = "active", ""
            if rng.random() < 0.01:
                g_status, error, started_at, expires, ref = (
                    "failed",
                    "could not connect to server: Connection refused",
                    None,
                    None,
                    "",
                )
                chunk["events"].append(
                    chain.event(
                        decided + datetime.timedelta(seconds=2),
                        None,
                        "grant.failed",
                        "grant",
                        grant_id,
                        {**who, "error": error, "attempts": 5},
                    )
                )
            else:
                chunk["events"].append(
                    chain.event(
                        started_at,
                        None,
                        "grant.provisioned",
                        "grant",
                        grant_id,
                        {**who, "external_ref": ref, "starts_at": str(started_at), "expires_at": str(expires)},
                    )
                )
                if expires < now:
                    end = rng.random()
                    if end < 0.80:
                        end_reason, revoke_requested = "expired", expires
                    elif end < 0.95:
                        end_reason, ended_by = "released", user_id
                        revoke_requested = started_at + duration * rng.random()
                    elif end < 0.98:
                        end_reason, ended_by = "revoked", rng.choice(approvers)[0]
                        revoke_requested = started_at + duration * rng.random()
                    else:
                        end_reason, revoke_requested = "policy", started_at + duration * rng.random()
                    revoked = revoke_requested + datetime.timedelta(milliseconds=rng.randrange(5, 900))
                    verified = revoked + datetime.timedelta(milliseconds=3)
                    g_status = "revoked"
                    chunk["events"].append(
                        chain.event(
                            revoke_requested,
                            ended_by,
                            "grant.revoke_requested",
                            "grant",
                            grant_id,
                            {**who, "reason": end_reason, "expires_at": str(expires)},
                        )
                    )
                    chunk["events"].append(
                        chain.event(
                            verified,
                            ended_by,
                            "grant.revoked",
                            "grant",
                            grant_id,
                            {
                                **who,
                                "reason": end_reason,
                                "revoked_at": str(revoked),
                                "verified_at": str(verified),
                                "expires_at": str(expires),
                                "attempts": 1,
                            },
                        )
                    )
            chunk["grants"].append(
                (
                    grant_id,
                    req_id,
                    None,
                    user_id,
                    profile_id,
                    g_status,
                    duration,
                    decided,
                    started_at,
                    expires,
                    ref,
                    "",
                    None,
                    end_reason or "",
                    ended_by,
                    revoke_requested,
                    revoked,
                    verified,
                    0 if g_status != "failed" else 5,
                    None,
                    error,
                    None,
                )
            )
            if len(chunk["events"]) >= 60_000:
                flush(conn)
                if grant_id % 100_000 < 10_000:
                    log(f"  {grant_id:,} grants, {chain.next_id - 1:,} events ({time.monotonic() - started:.0f} s)")
        flush(conn)
        for table in ("grants_accessrequest", "grants_grant", "grants_approval", "audit_auditevent"):
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        conn.execute("CREATE TABLE benchmark_fill (grants integer, seed integer)")
        conn.execute("INSERT INTO benchmark_fill VALUES (%s, %s)", [n, seed])
        conn.commit()
        # The rows went in by COPY, not through the lifecycle: count the Decisions report's day tallies
        # as the migration that made them does.
        from grants import tallies  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

        log("decision tallies: {} per profile, {} per approver".format(*tallies.rebuild()))
        conn.autocommit = True
        log("VACUUM ANALYZE")
        conn.execute("VACUUM ANALYZE")
        # The fill dirtied gigabytes: have them written out now, so that the measures below do not share the
        # machine with the checkpointer writing them.
        log("CHECKPOINT")
        try:
            conn.execute("CHECKPOINT")
        except psycopg.errors.InsufficientPrivilege:
            log("  not allowed for this role (needs pg_checkpoint or superuser): measuring while it writes")
    counts["fill_seconds"] = round(time.monotonic() - started, 1)
    return counts


def filled_with(bench_url: str) -> tuple[int, int] | None:
    with psycopg.connect(libpq_url(bench_url)) as conn:
        if conn.execute("SELECT to_regclass('benchmark_fill')").fetchone()[0] is None:
            return None
        return conn.execute("SELECT grants, seed FROM benchmark_fill").fetchone()


# -- the measures (each in a fresh process) --------------------------------------


def _client():
    django.setup()

    client = Client()
    client.force_login(get_user_model().objects.get(username="auditor"))
    return client


def child_pages(repeat: int) -> dict:
    client = _client()

    from grants.models import AccessRequest, Grant  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

    newest = Grant.objects.order_by("-pk").values_list("created_at", flat=True).first()
    month = (newest - datetime.timedelta(days=200)).date().replace(day=1)
    year = month.year - 1
    month_end = (month + datetime.timedelta(days=32)).replace(day=1) - datetime.timedelta(days=1)
    busy = AccessRequest.objects.values_list("requester__username", flat=True).order_by("pk").first()
    pages = [
        ("access history, first page", "/audit/access/"),
        ("access history, filtered: target + a month", f"/audit/access/?target=t03&since={month}&until={month_end}"),
        ("access history, filtered: a month", f"/audit/access/?since={month}&until={month_end}"),
        ("access history, filtered: a whole year", f"/audit/access/?since={year}-01-01&until={year}-12-31"),
        ("access history, filtered: a user", f"/audit/access/?user={busy}"),
        ("access history, filtered: outcome + profile", "/audit/access/?outcome=released&profile=p017"),
        ("access history, sorted by requested, page 20", "/audit/access/?sort=-requested_at&page=20"),
        ("current access", "/audit/current/"),
        ("decisions, a month", f"/audit/decisions/?since={month}&until={month_end}"),
        ("decisions, default (last 30 days)", "/audit/decisions/"),
        ("decisions, all time (two years)", "/audit/decisions/?since="),
        ("break-glass and drift", "/audit/break-glass/"),
        (f"user timeline ({busy})", f"/audit/users/{busy}/"),
        ("Prometheus /metrics (no METRICS_TOKEN)", "/metrics"),
    ]
    results = []
    for label, url in pages:
        for _ in range(2):
            response = client.get(url)
            if response.status_code != 200:
                raise BenchError(f"{url} answered {response.status_code}")
        queries = []
        # (CaptureQueriesContext would be emptied by the request_started signal.)
        with connection.execute_wrapper(
            lambda execute, sql, params, many, context: queries.append(sql) or execute(sql, params, many, context)  # noqa: B023 (used within this iteration only)
        ):
            client.get(url)
        times = []
        for _ in range(repeat):
            began = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - began)
        body = response.content.decode()
        results.append(
            {
                "page": label,
                "url": url,
                "queries": len(queries),
                "rows": body.count("<tr") - body.count("<thead"),
                "p50_ms": percentile(times, 50) * 1000,
                "p95_ms": percentile(times, 95) * 1000,
                "max_ms": max(times) * 1000,
            }
        )
    # The Decisions page adds up day tallies (counted from COPY'd rows by the fill): the figures of the rows themselves?
    from grants import selectors  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

    rows = selectors.decisions()
    everything = {"start": None, "end": None, "target": None, "profile": None}
    same = selectors.decision_stats(rows, tally=everything) == selectors.decision_stats(rows)
    return {"pages": results, "decisions_tallied_as_the_rows": same}


def child_csv() -> dict:
    """Download the access-history CSV as a client saving it would (`curl -o`), then check what it got.

    The clock runs from the request to the last byte written to a file;
    counting the rows and looking for un-neutralised formulas happens after
    it stops (three searches of 275 MB took 0.5 CPU-s, which on two cores
    the export would have shared with the measure).
    """
    client = _client()
    # A portal's worker is warm: one download first (one user's grants, the same view, query and COPY), so that
    # the clock does not include this fresh process's first request (imports, the first query plans: 0.4 s).
    from grants.models import Grant  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

    someone = Grant.objects.values_list("user__username", flat=True).order_by("pk").first()
    warm = client.get("/audit/access/", {"format": "csv", "user": someone})
    if warm.status_code != 200 or len(b"".join(warm.streaming_content).splitlines()) < 2:
        raise BenchError(f"the warm-up CSV of {someone}'s grants answered {warm.status_code} or no row")
    baseline = peak_rss_kb()
    with tempfile.TemporaryFile(prefix="jitportal-access-history-") as saved:
        began = time.perf_counter()
        response = client.get("/audit/access/?format=csv")
        if response.status_code != 200 or not response.streaming:
            raise BenchError(
                f"the CSV answered {response.status_code} (streaming: {getattr(response, 'streaming', None)})"
            )
        size = first_byte = 0
        for part in response.streaming_content:
            if not first_byte:
                first_byte = time.perf_counter() - began
            saved.write(part)
            size += len(part)
        seconds = time.perf_counter() - began
        response.close()
        peak = peak_rss_kb()
        saved.seek(0)
        # The fill's formula justification holds quotes, so csv quotes the cell: `,"=HYPERLINK(""...`
        # if it ran through untouched, `,"'=HYPERLINK(""...` once neutralised.
        counts = count_in(saved, [b"\n", b',"=HYPERLINK', b",=HYPERLINK", b",\"'=HYPERLINK"])
    rows = counts[0] - 1
    return {
        "rows": rows,
        "bytes": size,
        "seconds": seconds,
        "first_byte_s": first_byte,
        "rows_per_s": rows / seconds,
        "peak_rss_mb": peak / 1024,
        "rss_before_mb": baseline / 1024,
        "formula_cells": counts[1] + counts[2],
        "neutralised_cells": counts[3],
    }


def peak_rss_kb() -> int:
    """This process's peak resident memory in KiB: VmHWM, its own memory's high-water mark, where Linux has it.

    Not `ru_maxrss`: Linux carries that across exec, so a measure spawned by
    the benchmark right after a fill reported the filling parent's 190 MB as
    its own (100 MB when spawned by a parent that had not filled).
    """
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def count_in(file, needles: list[bytes], *, block: int = 1 << 20) -> list[int]:
    """How often each of `needles` occurs in `file`, read `block` bytes at a time (a needle may span two blocks)."""
    counts = [0] * len(needles)
    keep = max(map(len, needles)) - 1
    carry = b""
    while data := file.read(block):
        window = carry + data
        for i, needle in enumerate(needles):
            # An occurrence that starts within the carried bytes was counted with the block before.
            counts[i] += window.count(needle) - carry.count(needle)
        carry = window[-keep:] if keep else b""
    return counts


def run_child(kind: str, env: dict, repeat: int) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--repeat", str(repeat)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BenchError(f"the {kind} measure failed:\n{result.stdout}{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def time_verify(env: dict) -> dict:
    # As an outside party checks the trail: against a head exported (and signed) just before.
    heads = Path(tempfile.mkdtemp(prefix="jitportal-heads-")) / "heads.txt"
    env = {**env, "AUDIT_SIGNING_KEY": base64.b64encode(os.urandom(32)).decode(), "AUDIT_HEAD_FILE": str(heads)}
    exported = subprocess.run(
        [sys.executable, "manage.py", "audit", "head", "--file", str(heads)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    if exported.returncode != 0:
        raise BenchError(f"audit head failed:\n{exported.stdout}{exported.stderr[-4000:]}")
    began = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "manage.py", "audit", "verify"], cwd=REPO, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - began
    heads.unlink()
    heads.parent.rmdir()
    if result.returncode != 0 or "intact" not in result.stdout or "every signature good" not in result.stdout:
        raise BenchError(f"audit verify failed:\n{result.stdout}{result.stderr[-4000:]}")
    events = int(result.stdout.split("intact: ")[1].split(" events")[0])
    return {"events": events, "seconds": seconds, "events_per_s": events / seconds, "output": result.stdout.strip()}


# -- the table ----------------------------------------------------------------------


def print_table(results: dict) -> None:
    fill = results.get("fill")
    print()
    if fill:
        print(
            f"Filled {fill['grants']:,} grants, {fill['requests']:,} requests, {fill['approvals']:,} approvals and "
            f"{fill['events']:,} audit events in {fill['fill_seconds']} s."
        )
    print()
    print("| measure | result | goal |")
    print("| --- | ---: | --- |")
    csv_ = results["csv"]
    print(
        f"| access-history CSV, {csv_['rows']:,} rows ({csv_['bytes'] / 1e6:,.0f} MB) | "
        f"{csv_['rows_per_s']:,.0f} rows/s "
        f"({csv_['seconds']:.1f} s, first byte {csv_['first_byte_s']:.2f} s) | >= 200,000 rows/s |"
    )
    print(
        f"| peak memory of the exporting process | {csv_['peak_rss_mb']:.0f} MB (before the export: "
        f"{csv_['rss_before_mb']:.0f} MB) | < 200 MB |"
    )
    if "verify" in results:
        v = results["verify"]
        print(
            f"| `audit verify` against a signed head, {v['events']:,} events | {v['events_per_s']:,.0f} events/s "
            f"({v['seconds']:.1f} s) | >= 100,000 events/s |"
        )
    print()
    print("| page | p50 ms | p95 ms | max ms | queries | goal |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for page in results["pages"]:
        goal = "p95 < 200" if page["url"].startswith("/audit/") else ""
        print(
            f"| {page['page']} | {page['p50_ms']:.0f} | {page['p95_ms']:.0f} | {page['max_ms']:.0f} | "
            f"{page['queries']} | {goal} |"
        )
    print()
    print(
        "Decisions from the day tallies equal those from the rows:",
        "yes" if results["decisions_tallied_as_the_rows"] else "NO",
    )


def _migrate(env: dict) -> None:
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    if migrate.returncode != 0:
        raise BenchError(f"migrate failed:\n{migrate.stdout}{migrate.stderr}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        result = child_pages(args.repeat) if args.child == "pages" else child_csv()
        print(json.dumps(result, default=str))
        return 0
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url:
        raise BenchError("Set DATABASE_URL to the portal's PostgreSQL (make benchmark-reports does).")
    bench_url, maintenance_url, bench_db = bench_urls(database_url, args.db_name, suffix="_reports")
    env = {
        **os.environ,
        "DATABASE_URL": bench_url,
        "METRICS_TOKEN": "",
        "METRICS_PUBLIC": "true",
        "DJANGO_SETTINGS_MODULE": "jitportal.settings",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "testserver",
        "JITPORTAL_DEMO": "true",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update(env)
    results: dict = {}
    reuse = (
        args.reuse and database_exists(maintenance_url, bench_db) and filled_with(bench_url) == (args.grants, args.seed)
    )
    keep = args.keep or args.reuse
    try:
        if reuse:
            log(f"reusing portal database {bench_db} ({args.grants:,} grants, seed {args.seed}); migrating it")
            _migrate(env)
        else:
            if args.reuse:
                log(f"{bench_db} does not hold {args.grants:,} grants of seed {args.seed}: filling it")
            log(f"portal database {bench_db} (fresh)")
            create_database(maintenance_url, bench_db)
            _migrate(env)

            django.setup()
            log(f"filling {args.grants:,} grants")
            results["fill"] = {"grants": args.grants, **fill(bench_url, args.grants, args.seed)}

            connections.close_all()
        if not args.skip_verify:
            log("audit verify")
            results["verify"] = time_verify(env)
        log(f"report pages, {args.repeat} loads each")
        results.update(run_child("pages", env, args.repeat))
        log("access-history CSV")
        results["csv"] = run_child("csv", env, args.repeat)
    finally:
        if keep:
            log(f"kept portal database {bench_db} (measure it again with --reuse)")
        else:
            drop_database(maintenance_url, bench_db)
            log(f"dropped portal database {bench_db}")
    print_table(results)
    if args.json:
        write_json(results, args.json)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"error: {exc}")
        sys.exit(1)
