#!/usr/bin/env python3
"""How late does access really end when a burst of grants expires at once?

Builds a throwaway world, makes N grants expire within a few seconds of each
other, runs the real background processes (`manage.py qcluster` and
`manage.py expiry_timer`) and measures, per grant, how long after
`expires_at`:

- a new password login is refused (the target's VALID UNTIL; sampled grants),
- the role is gone from the target (`pg_roles`, polled for all N roles),
- a session opened before expiry is terminated (`pg_stat_activity`; sampled),
- the portal recorded the revocation as verified (`Grant.verified_at`).

What it sets up (and removes again, also on Ctrl-C or an error):

- a dedicated portal database, DATABASE_URL with the database name replaced
  (default: `<name>_bench`), created fresh on the same server and migrated
  with `manage.py migrate`;
- a throwaway PostgreSQL target cluster (`devtools.pgcluster`) with the demo
  roles; its admin DSN is passed to every process in JIT_BENCH_PG_DSN;
- one approver and N requesters (each grant needs its own requester: the
  lifecycle refuses a second live grant of the same profile to one person).

Grants go through the lifecycle in this process: `submit_request`,
`approve_request`, `provision_grant`. `provision_grant` starts the clock
(`expires_at = now + duration`) and the duration is fixed when the request
is submitted, so each request is submitted just before it is provisioned,
with `duration = its target expiry - now`. Target expiries are spread evenly
(in random order) over `--spread` seconds starting at T, where T is chosen
from a short calibration run (a few grants provisioned, released and revoked
in-process, not counted) so that the burst starts about `--lead` seconds
after provisioning ends. The actual `expires_at` is then a few milliseconds
after the target (the time between submit and provision); every lag below
is measured against the grant's real `expires_at`.

The set-up enqueues tasks (a `provision` task per approval, notifications);
in real life they would have run long before the burst, and this process
has already provisioned the grants, so the queue is purged before the
workers start (reported under checks). Tasks that revocation itself
enqueues (such as notifications) do run during the burst.

Run with `make benchmark-expiry ARGS="--grants 100"`; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import django
import psycopg
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import connection, connections
from django.db.models import Count
from django.utils import timezone
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import BenchError, bench_urls, create_database, drop_database, log, percentile, run_cli, write_json  # noqa: E402 (after sys.path.insert: the benchmarks' own modules)

from devtools import pgcluster  # noqa: E402 (after sys.path.insert: the repository's own packages)
from devtools.pgcluster import DEMO_DB  # noqa: E402 (after sys.path.insert: the repository's own packages)

TARGET_ENV = "JIT_BENCH_PG_DSN"
JUSTIFICATION = "Benchmark: expiry lag of a burst of grants (benchmarks/expiry_lag.py)"
# Messages with which the target refuses a login after expiry or revocation.
REFUSALS = ("password authentication failed", "is not permitted to log in", "does not exist")


# -- arguments and databases ------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grants", type=int, default=1000, help="grants expiring in the burst (default 1000)")
    parser.add_argument(
        "--sample", type=int, default=50, help="grants whose login and open session are probed (default 50)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("Q_WORKERS", 4)),
        help="qcluster workers (Q_WORKERS; default 4)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=int(os.environ.get("JIT_EXPIRY_BATCH", 25)),
        help="JIT_EXPIRY_BATCH for the workers (default 25)",
    )
    parser.add_argument(
        "--batch-max",
        type=int,
        default=int(os.environ.get("JIT_EXPIRY_BATCH_MAX", 400)),
        help="JIT_EXPIRY_BATCH_MAX for the workers: the largest batch a burst grows to (default 400)",
    )
    parser.add_argument(
        "--lead", type=float, default=25.0, help="seconds from the end of provisioning to the first expiry (default 25)"
    )
    parser.add_argument(
        "--setup",
        choices=("timed", "retimed", "bulk"),
        default="timed",
        help="timed (default): each grant provisioned with the duration that lands it in the burst; "
        "retimed: all provisioned for an hour, then moved into the burst in one step (for 10,000); "
        "bulk: the sample through the lifecycle, the others written as rows and roles in bulk (seconds for 10,000)",
    )
    parser.add_argument(
        "--spread", type=float, default=3.0, help="expiries are spread over this many seconds (default 3)"
    )
    parser.add_argument("--poll", type=float, default=0.05, help="target poll interval in seconds (default 0.05)")
    parser.add_argument(
        "--probe-interval", type=float, default=0.05, help="login probe interval in seconds (default 0.05)"
    )
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="give up this many seconds after the last expiry (default 180)"
    )
    parser.add_argument(
        "--stall",
        type=float,
        default=60.0,
        help="give up when nothing changes on the target for this long after the last expiry (default 60)",
    )
    parser.add_argument("--db-name", help="portal database to create (default: DATABASE_URL's name + '_bench')")
    parser.add_argument("--seed", type=int, default=None, help="random seed (sample and expiry order)")
    parser.add_argument(
        "--json", nargs="?", const="-", metavar="PATH", help="also write the results as JSON to PATH (or stdout)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the portal database, the target cluster and the logs")
    args = parser.parse_args(argv)
    if args.grants < 1 or args.sample < 0 or args.workers < 1 or args.batch < 1:
        parser.error("--grants, --workers and --batch must be positive, --sample not negative")
    args.sample = min(args.sample, args.grants)
    if args.setup == "bulk" and args.sample < 1:
        parser.error("--setup bulk makes the sample through the lifecycle: --sample must be at least 1")
    return args


# -- child processes ----------------------------------------------------------


class Children:
    """The workers and the timer, each in its own process group, logging to files."""

    def __init__(self, env: dict, log_dir: Path):
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[str, tuple[subprocess.Popen, Path]] = {}

    def start(self, name: str, *args: str) -> None:
        path = self.log_dir / f"{name}.log"
        fh = open(path, "wb")  # noqa: SIM115 (the child process writes it while it runs; closed when it has stopped)
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), *args],
            cwd=REPO,
            env=self.env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            # Own process group: Ctrl-C reaches only us, and we stop them in order.
            start_new_session=True,
        )
        fh.close()
        self.procs[name] = (proc, path)

    def check(self) -> None:
        for name, (proc, path) in self.procs.items():
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with {proc.returncode}:\n{tail(path)}")

    def stop(self) -> None:
        # SIGTERM to the main process only: qcluster then stops its own sentinel,
        # pusher, workers and monitor in order.
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 30
        for proc, _ in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # Worker processes of qcluster share the group: make sure none is left.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- measurement --------------------------------------------------------------


class TargetPoller(threading.Thread):
    """One admin connection; every `interval`, which of our roles and held sessions still exist."""

    def __init__(self, dsn: str, roles: list[str], pids: list[int], interval: float):
        super().__init__(name="target-poller", daemon=True)
        self.dsn, self.interval = dsn, interval
        self.roles, self.pids = list(roles), list(pids)
        self.prefix = os.path.commonprefix(self.roles)
        self.role_gone: dict[str, float] = {}
        self.pid_gone: dict[int, float] = {}
        self.polls = 0
        self.max_gap = 0.0
        self.error: BaseException | None = None
        self.stop_event = threading.Event()

    @property
    def done(self) -> bool:
        return len(self.role_gone) == len(self.roles) and len(self.pid_gone) == len(self.pids)

    def run(self):
        try:
            with psycopg.connect(self.dsn, autocommit=True, application_name="jitbench-poller") as conn:
                last = None
                while not self.stop_event.is_set() and not self.done:
                    started = time.time()
                    # By prefix rather than `= ANY(1000 names)`: cheaper for the target,
                    # whose CPU the workers need.
                    roles_left, pids_left = conn.execute(
                        "SELECT ARRAY(SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, %s)),"
                        " ARRAY(SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s))",
                        [self.prefix, self.pids],
                    ).fetchone()
                    # Conservative: the change happened at the latest when the answer came back.
                    seen = time.time()
                    self.polls += 1
                    if last is not None:
                        self.max_gap = max(self.max_gap, seen - last)
                    last = seen
                    roles_left, pids_left = set(roles_left), set(pids_left)
                    for role in self.roles:
                        if role not in roles_left and role not in self.role_gone:
                            self.role_gone[role] = seen
                    for pid in self.pids:
                        if pid not in pids_left and pid not in self.pid_gone:
                            self.pid_gone[pid] = seen
                    self.stop_event.wait(max(0.0, self.interval - (time.time() - started)))
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            self.error = exc


class LoginProbe(threading.Thread):
    """From just before expiry, try to log in with the grant's credentials until the target refuses."""

    def __init__(self, grant_id: int, dsn: str, expires_at: float, interval: float, stop_event: threading.Event):
        super().__init__(name=f"probe-{grant_id}", daemon=True)
        self.grant_id, self.dsn, self.expires_at, self.interval = grant_id, dsn, expires_at, interval
        self.stop_event = stop_event
        self.refused_at: float | None = None
        self.last_ok: float | None = None
        self.attempts = 0
        self.other_errors: list[str] = []

    def run(self):
        self.stop_event.wait(max(0.0, self.expires_at - 0.15 - time.time()))
        while not self.stop_event.is_set():
            started = time.time()
            self.attempts += 1
            try:
                psycopg.connect(self.dsn, autocommit=True, connect_timeout=5, application_name="jitbench-probe").close()
                self.last_ok = started
            except psycopg.OperationalError as exc:
                message = str(exc)
                if any(r in message for r in REFUSALS):
                    self.refused_at = time.time()
                    return
                self.other_errors.append(" ".join(message.split())[:200])
            self.stop_event.wait(max(0.0, self.interval - (time.time() - started)))


class CpuSampler(threading.Thread):
    """CPU seconds used during the burst, by who used them.

    Every `interval` it reads /proc/stat (the whole machine) and /proc/<pid>/stat
    of every process, and files each process under: the benchmark itself, a
    child (qcluster with its workers, expiry_timer: by process group), the
    target cluster (descendants of its postmaster), the portal database's
    backends (their title names the bench database) or nothing. Backends
    that exited count through their postmaster's reaped-children time; for
    the portal's server that includes other databases' backends. "other" is
    the machine's busy time minus all of those: other programs on the machine.
    """

    def __init__(
        self,
        *,
        groups: dict[int, str],
        target_postmaster: int | None,
        portal_postmaster: int | None,
        portal_db: str,
        interval: float = 0.5,
    ):
        super().__init__(name="cpu-sampler", daemon=True)
        self.groups, self.target_postmaster, self.portal_db = groups, target_postmaster, portal_db
        self.postmasters = {}
        if target_postmaster:
            self.postmasters[target_postmaster] = "target PostgreSQL (backends that exited)"
        if portal_postmaster:
            self.postmasters[portal_postmaster] = "portal PostgreSQL, any database (backends that exited)"
        self.interval = interval
        self.hz = os.sysconf("SC_CLK_TCK")
        self.samples: list[tuple[float, int, int, dict[int, tuple[str, float]]]] = []
        self.categories: dict[tuple[int, int], str] = {}
        self.stop_event = threading.Event()

    def _machine(self) -> tuple[int, int]:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def _processes(self) -> dict[int, tuple[str, float]]:
        stats, children = {}, {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as fh:
                    rest = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # fields after the name: state ppid pgrp ... utime(12) stime(13) cutime(14) cstime(15) ... starttime(20)
            stats[int(name)] = (int(rest[1]), int(rest[2]), (int(rest[11]) + int(rest[12])) / self.hz, int(rest[19]))
            pid = int(name)
            if pid in self.postmasters:
                # A postmaster reaps its backends: their CPU lands in its cutime/cstime.
                children[-pid] = (self.postmasters[pid], (int(rest[13]) + int(rest[14])) / self.hz)
        out = dict(children)
        for pid, (ppid, pgrp, cpu, started) in stats.items():
            key = (pid, started)
            category = self.categories.get(key)
            if category is None:
                category = self._categorise(pid, ppid, pgrp, stats)
                # Remember only a hit: a backend just forked still has the postmaster's title.
                if category:
                    self.categories[key] = category
            if category:
                out[pid] = (category, cpu)
        return out

    def _categorise(self, pid, ppid, pgrp, stats) -> str:
        if pid == os.getpid():
            return "benchmark (poller, probes)"
        if pgrp in self.groups:
            return self.groups[pgrp]
        ancestor, hops = pid, 0
        while ancestor and hops < 4:
            if ancestor == self.target_postmaster:
                return "target PostgreSQL"
            ancestor = stats.get(ancestor, (0,))[0]
            hops += 1
        if self._portal(pid):
            return "portal PostgreSQL (bench database)"
        return ""

    def _portal(self, pid) -> bool:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                title = fh.read().decode(errors="replace")
        except OSError:
            return False
        return title.startswith("postgres:") and f" {self.portal_db} " in title

    def run(self):
        while not self.stop_event.is_set():
            try:
                busy, total = self._machine()
                procs = self._processes()
            except OSError:
                return
            self.samples.append((time.time(), busy, total, procs))
            self.stop_event.wait(self.interval)

    def report(self, start: float, end: float) -> dict | None:
        """CPU seconds per category between the samples around start and end."""
        inside = [s for s in self.samples if start - self.interval <= s[0] <= end + self.interval]
        if len(inside) < 2 or inside[-1][2] == inside[0][2]:
            return None
        first_t, busy0, total0, _ = inside[0]
        last_t, busy1, total1, _ = inside[-1]
        baseline: dict[int, float] = {}
        latest: dict[int, tuple[str, float]] = {}
        for _, _, _, procs in inside:
            for pid, (category, cpu) in procs.items():
                # A process first seen after the window opened started in it.
                baseline.setdefault(pid, cpu if procs is inside[0][3] else 0.0)
                latest[pid] = (category, cpu)
        used: dict[str, float] = {}
        for pid, (category, cpu) in latest.items():
            used[category] = used.get(category, 0.0) + cpu - baseline[pid]
        cpus = os.cpu_count() or 1
        wall = last_t - first_t
        busy_s = (busy1 - busy0) / (total1 - total0) * wall * cpus
        used["other (other programs)"] = max(0.0, busy_s - sum(used.values()))
        return {
            "window_s": round(wall, 2),
            "cpus": cpus,
            "busy": round(busy_s / (wall * cpus), 3),
            "cpu_s": {k: round(v, 2) for k, v in sorted(used.items(), key=lambda kv: -kv[1])},
        }


def summarise(values: list[float], expected: int) -> dict:
    return {
        "n": len(values),
        "missing": expected - len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


# -- the benchmark -------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url:
        raise BenchError("Set DATABASE_URL to the portal's PostgreSQL (make benchmark-expiry does).")
    bench_url, maintenance_url, bench_db = bench_urls(database_url, args.db_name)
    args.bench_db = bench_db

    if not pgcluster.available():
        raise BenchError("PostgreSQL server programs are missing under /usr/lib/postgresql (`make system-deps`).")

    work_dir = Path(tempfile.mkdtemp(prefix="jitbench-"))
    # The target cluster lives in work_dir/target and runs as the postgres OS user,
    # which must be able to traverse work_dir (mkdtemp makes it 0700).
    os.chmod(work_dir, 0o711)
    cluster = pgcluster.DevCluster(work_dir / "target")
    state: dict = {}  # run() puts the child processes here, so that finally can stop them
    held: dict[int, object] = {}
    stop_event = threading.Event()
    db_created = django_ready = False
    try:
        log(f"portal database {bench_db} (fresh), work dir {work_dir}")
        create_database(maintenance_url, bench_db)
        db_created = True

        cluster.start()
        cluster.setup_demo_roles()
        log(f"target cluster on 127.0.0.1:{cluster.port}")

        os.environ.update(
            {
                "DATABASE_URL": bench_url,
                "DJANGO_SETTINGS_MODULE": "jitportal.settings",
                "JITPORTAL_DEMO": "true",  # a throwaway portal without an identity provider
                TARGET_ENV: cluster.admin_dsn,
                "Q_WORKERS": str(args.workers),
                "JIT_EXPIRY_BATCH": str(args.batch),
                "JIT_EXPIRY_BATCH_MAX": str(args.batch_max),
            }
        )
        child_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        result = subprocess.run(
            [sys.executable, str(REPO / "manage.py"), "migrate", "--noinput", "-v", "0"],
            cwd=REPO,
            env=child_env,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise BenchError(f"migrate failed:\n{result.stdout}{result.stderr}")

        django.setup()
        django_ready = True
        # django-q logs every enqueue ("Enqueued [jitportal] 17") at INFO.
        logging.getLogger("django-q").setLevel(logging.WARNING)
        results = run(args, rng, cluster, work_dir, child_env, held, stop_event, state)
        print_table(results)
        if args.json:
            write_json(results, args.json)
        return 0
    finally:
        stop_event.set()
        children = state.get("children")
        if children is not None:
            log("stopping qcluster and expiry_timer")
            children.stop()
        for conn in held.values():
            try:
                conn.close()
            except Exception:  # noqa: BLE001 (clean-up at the end: a session already gone is fine)
                pass
        if django_ready:
            connections.close_all()
        if args.keep:
            log(f"kept: portal database {bench_db}, target cluster and logs in {work_dir} (cluster stopped)")
            cluster.stop()
        else:
            try:
                cluster.destroy()  # its files too, wherever they went
            except Exception as exc:  # noqa: BLE001 (clean up the rest anyway)
                log(f"stopping the target cluster failed: {exc}")
            shutil.rmtree(work_dir, ignore_errors=True)
            if db_created:
                drop_database(maintenance_url, bench_db)
            log("cleaned up (portal database dropped, target cluster removed)")


def run(
    args, rng, cluster, work_dir: Path, child_env: dict, held: dict, stop_event: threading.Event, state: dict
) -> dict:
    from django.contrib.auth.models import Group  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

    from grants import lifecycle  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)
    from grants.models import AccessProfile, Grant, Target  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

    N = args.grants
    User = get_user_model()

    # Catalog and people -----------------------------------------------------
    engineers = Group.objects.create(name="engineers")
    approvers = Group.objects.create(name="db-approvers")
    approver = User.objects.create(username="bench-approver", password=make_password(None))
    approver.groups.add(approvers)
    calibration = min(10, max(3, N // 100))
    users = User.objects.bulk_create(
        [User(username=f"bench-{i:05d}", password=make_password(None)) for i in range(N + calibration)]
    )
    User.groups.through.objects.bulk_create([User.groups.through(user_id=u.pk, group_id=engineers.pk) for u in users])
    target = Target.objects.create(
        name="bench-postgres",
        kind="postgres",
        secret_env=TARGET_ENV,
        config={"host": cluster.host, "port": cluster.port, "dbname": DEMO_DB},
    )
    profile = AccessProfile.objects.create(
        name="bench-readonly",
        title="appdb read-only (benchmark)",
        target=target,
        scope={"roles": ["app_readonly"]},
        max_duration=datetime.timedelta(hours=8),
        approver_group=approvers,
    )
    profile.requestable_by.add(engineers)

    connectors: dict = {}
    state["set-up connectors"] = connectors

    def make_grant(user, duration: datetime.timedelta) -> Grant:
        req = lifecycle.submit_request(requester=user, profile=profile, duration=duration, justification=JUSTIFICATION)
        lifecycle.approve_request(req.pk, actor=approver, comment="benchmark")
        # One admin connection to the target for the whole set-up, as a worker's pass keeps one.
        grant = lifecycle.provision_grant(Grant.objects.get(request_id=req.pk).pk, connectors=connectors)
        if grant is None or grant.status != Grant.Status.ACTIVE:
            raise BenchError(f"Provisioning failed: {grant and grant.last_error}")
        return grant

    if args.setup == "retimed":
        return _retimed(args, rng, cluster, users[:N], make_grant, work_dir, child_env, held, stop_event, state)
    if args.setup == "bulk":
        return _bulk(
            args, rng, cluster, users[:N], profile, approver, make_grant, work_dir, child_env, held, stop_event, state
        )

    # Calibration: how long one grant takes here, so the burst lands where we want it.
    timings = []
    for user in users[N:]:
        started = time.monotonic()
        grant = make_grant(user, datetime.timedelta(hours=1))
        timings.append(time.monotonic() - started)
        lifecycle.revoke_grant(grant.pk, actor=user, reason=Grant.EndReason.RELEASED)
        lifecycle.complete_revocation(grant.pk)
    # The median: the first grant pays for connections and caches.
    per_grant = sorted(timings)[len(timings) // 2]
    estimate = per_grant * N * 1.2
    first_expiry = timezone.now() + datetime.timedelta(seconds=estimate + args.lead)
    log(
        f"calibration: {per_grant * 1000:.1f} ms per grant; provisioning {N} grants (~{estimate:.0f} s), "
        f"burst at {first_expiry:%H:%M:%S} over {args.spread:g} s"
    )

    # Provisioning ------------------------------------------------------------
    offsets = [args.spread * i / max(1, N - 1) for i in range(N)]
    rng.shuffle(offsets)
    grants: list[Grant] = []
    started = time.monotonic()
    last_report = started
    for i, user in enumerate(users[:N]):
        duration = first_expiry + datetime.timedelta(seconds=offsets[i]) - timezone.now()
        if duration < datetime.timedelta(seconds=3):
            raise BenchError(f"Provisioning is slower than calibrated ({i}/{N} done); rerun with a larger --lead.")
        grants.append(make_grant(user, duration))
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            log(f"  provisioned {i + 1}/{N}")
    provision_s = time.monotonic() - started
    log(
        f"provisioned {N} grants in {provision_s:.1f} s ({N / provision_s:.1f}/s); "
        f"first expiry in {min(g.expires_at for g in grants).timestamp() - time.time():.1f} s"
    )
    return burst(
        args,
        rng,
        cluster,
        grants,
        work_dir,
        child_env,
        held,
        stop_event,
        state,
        provision={
            "total_s": provision_s,
            "grants_per_s": N / provision_s,
            "calibration_ms_per_grant": per_grant * 1000,
        },
    )


def _retimed(
    args, rng, cluster, users, make_grant, work_dir, child_env, held, stop_event, state, *, made=(), made_s=0.0
) -> dict:
    """`--setup retimed`: provision at whatever pace, then move every grant's expiry into the burst at once.

    Each grant goes through the lifecycle with an hour to run; when all are
    active, one transaction on the target sets each role's `VALID UNTIL` to
    its burst time (as the connector's `extend` would, a statement per role)
    and one UPDATE gives the grants the same `expires_at`. That is the state
    timed provisioning ends in, without having to finish within a lead
    calibrated beforehand: at 10,000 grants on a loaded machine provisioning
    took an hour, longer than any lead. What this skips, and `timed` keeps:
    the `grant.provisioned` audit events and `duration` say an hour.
    """
    from grants.models import Grant  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

    grants: list[Grant] = list(made)
    N = len(users) + len(grants)
    started = last_report = time.monotonic() - made_s
    for i, user in enumerate(users, start=len(grants)):
        grants.append(make_grant(user, datetime.timedelta(hours=1)))
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            log(f"  provisioned {i + 1}/{N}")
    provision_s = time.monotonic() - started
    log(f"provisioned {N} grants in {provision_s:.1f} s ({N / provision_s:.1f}/s); retiming them into the burst")

    offsets = [args.spread * i / max(1, N - 1) for i in range(N)]
    rng.shuffle(offsets)
    first_expiry = timezone.now() + datetime.timedelta(seconds=args.lead)
    for grant, offset in zip(grants, offsets, strict=True):
        grant.expires_at = first_expiry + datetime.timedelta(seconds=offset)
    with psycopg.connect(cluster.admin_dsn) as target, target.cursor() as cursor:
        for i in range(0, N, 500):
            cursor.execute(
                sql.SQL("; ").join(
                    sql.SQL("ALTER ROLE {} VALID UNTIL {}").format(
                        sql.Identifier(g.external_ref), sql.Literal(g.expires_at.isoformat())
                    )
                    for g in grants[i : i + 500]
                )
            )
    Grant.objects.bulk_update(grants, ["expires_at"], batch_size=1000)
    log(f"retimed: first expiry in {first_expiry.timestamp() - time.time():.1f} s")
    return burst(
        args,
        rng,
        cluster,
        grants,
        work_dir,
        child_env,
        held,
        stop_event,
        state,
        provision={"total_s": provision_s, "grants_per_s": N / provision_s, "calibration_ms_per_grant": None},
    )


def _bulk(args, rng, cluster, users, profile, approver, make_grant, work_dir, child_env, held, stop_event, state):
    """`--setup bulk`: the sample through the lifecycle, every other grant written directly, then retimed.

    The probed grants (`--sample`) need real credentials, so they are made
    as `retimed` makes them. The others are rows written in bulk (an
    approved request and an active grant each, as the lifecycle leaves
    them, without their set-up audit events) and LOGIN roles made on the
    target in batches, member of the profile's role, as the connector makes
    them. The burst then finds exactly what a provisioned grant leaves:
    10,000 grants take seconds instead of minutes. What this skips: the
    set-up's audit events and its notifications of the bulk grants.
    """
    from grants.models import AccessRequest, Grant  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

    started = time.monotonic()
    sampled = [make_grant(user, datetime.timedelta(hours=1)) for user in users[: args.sample]]
    now = timezone.now()
    hour = datetime.timedelta(hours=1)
    requests = AccessRequest.objects.bulk_create(
        [
            AccessRequest(
                requester=user,
                profile=profile,
                duration=hour,
                justification=JUSTIFICATION,
                status=AccessRequest.Status.APPROVED,
                created_at=now,
                decided_at=now,
                decided_by=approver,
                decision_comment="benchmark",
                scope=profile.scope,
                max_duration=profile.max_duration,
                target=profile.target,
            )
            for user in users[args.sample :]
        ],
        batch_size=2000,
    )
    grants = Grant.objects.bulk_create(
        [
            Grant(
                request=req,
                user_id=req.requester_id,
                profile=profile,
                status=Grant.Status.ACTIVE,
                duration=hour,
                created_at=now,
                starts_at=now,
                expires_at=now + hour,
            )
            for req in requests
        ],
        batch_size=2000,
    )
    connector = state["set-up connectors"][profile.target_id]
    for grant in grants:
        grant.external_ref = connector.account_name(grant)
    Grant.objects.bulk_update(grants, ["external_ref"], batch_size=2000)
    with psycopg.connect(cluster.admin_dsn, autocommit=True) as target, target.cursor() as cursor:
        for i in range(0, len(grants), 500):
            cursor.execute(
                sql.SQL("; ").join(
                    sql.SQL("CREATE ROLE {} LOGIN VALID UNTIL {} IN ROLE app_readonly").format(
                        sql.Identifier(g.external_ref), sql.Literal(g.expires_at.isoformat())
                    )
                    for g in grants[i : i + 500]
                )
            )
    state["sample pool"] = [g.pk for g in sampled]
    return _retimed(
        args,
        rng,
        cluster,
        [],
        make_grant,
        work_dir,
        child_env,
        held,
        stop_event,
        state,
        made=sampled + grants,
        made_s=time.monotonic() - started,
    )


def burst(
    args,
    rng,
    cluster,
    grants,
    work_dir: Path,
    child_env: dict,
    held: dict,
    stop_event: threading.Event,
    state: dict,
    *,
    provision: dict,
) -> dict:
    """Hold the sample's sessions, start the workers and the timer, and measure the burst of `grants`' expiries."""
    from django_q.models import Failure, OrmQ, Success  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

    from audit.log import verify as verify_chain  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)
    from audit.models import AuditEvent  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)
    from grants import lifecycle  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)
    from grants.models import Grant  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

    N = len(grants)
    for connector in state.pop("set-up connectors", {}).values():
        connector.close()
    provisioned_at = timezone.now()
    expires = {g.pk: g.expires_at.timestamp() for g in grants}
    roles = {g.pk: g.external_ref for g in grants}

    # Credentials and open sessions for the sample -----------------------------
    sample = sorted(rng.sample(state.get("sample pool") or [g.pk for g in grants], args.sample))
    credentials = {}
    by_pk = {g.pk: g for g in grants}
    for pk in sample:
        credentials[pk] = lifecycle.reveal_credentials(pk, actor=by_pk[pk].user)
        conn = psycopg.connect(credentials[pk]["dsn"], autocommit=True, application_name="jitbench-held")
        conn.execute("SELECT 1")
        held[pk] = conn
    pids = {pk: conn.info.backend_pid for pk, conn in held.items()}

    # What the set-up enqueued (provision tasks, notifications of requests and
    # grants) would have run long before expiry in real life; provisioning is done.
    purged = OrmQ.objects.all().delete()[0]
    # Likewise the "expires in 10 minutes" reminders, if this version sends them:
    # with a lead of seconds they would all fall into the burst.
    if any(f.name == "reminded_at" for f in Grant._meta.get_fields()):
        Grant.objects.filter(pk__in=list(expires)).update(reminded_at=timezone.now())

    # Workers and timer ------------------------------------------------------------
    children = Children(child_env, work_dir)
    state["children"] = children
    children.start("qcluster", "qcluster")
    children.start("expiry_timer", "expiry_timer")
    log(
        f"started qcluster ({args.workers} workers, batch {args.batch}) and expiry_timer; purged {purged} "
        "tasks queued by the set-up"
    )

    try:
        target_postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        target_postmaster = None

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        portal_backend = cursor.fetchone()[0]
    try:
        with open(f"/proc/{portal_backend}/stat") as fh:
            portal_postmaster = int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        portal_postmaster = None  # the portal's server runs on another machine
    cpu = CpuSampler(
        groups={proc.pid: name for name, (proc, _) in children.procs.items()},
        target_postmaster=target_postmaster,
        portal_postmaster=portal_postmaster,
        portal_db=args.bench_db,
    )
    cpu.start()
    poller = TargetPoller(cluster.admin_dsn, list(roles.values()), list(pids.values()), args.poll)
    poller.start()
    probes = [LoginProbe(pk, credentials[pk]["dsn"], expires[pk], args.probe_interval, stop_event) for pk in sample]
    for probe in probes:
        probe.start()

    lead = min(expires.values()) - provisioned_at.timestamp()
    last_expiry = max(expires.values())
    deadline = last_expiry + args.timeout
    ids = list(expires)
    last_report = 0.0
    portal_done = False
    progress, progress_at = None, time.time()
    sessions_before = backlog = None
    counters_before: dict[str, int] = {}
    while True:
        children.check()
        if sessions_before is None and time.time() >= min(expires.values()):
            sessions_before = portal_sessions()
            counters_before = portal_counters()
            backlog = OrmQ.objects.count()
        if poller.error is not None:
            raise BenchError(f"target poller failed: {poller.error}")
        now = time.time()
        probes_done = all(p.refused_at is not None for p in probes)
        if poller.done or (now > last_expiry + 10 and now - last_report < 0.3):
            # Every grant of this database but the calibration ones (released) is ours.
            portal_done = not Grant.objects.exclude(status=Grant.Status.REVOKED).exists()
        if poller.done and probes_done and portal_done:
            break
        if now > deadline:
            log("timeout: giving up on what is left")
            break
        seen = (len(poller.role_gone), len(poller.pid_gone), sum(p.refused_at is not None for p in probes))
        if seen != progress:
            progress, progress_at = seen, now
        elif now > last_expiry and now - progress_at > args.stall:
            log(f"nothing changed on the target for {args.stall:g} s: giving up on what is left")
            break
        if now - last_report >= 5 and now > min(expires.values()) - 5:
            last_report = now
            revoked = Grant.objects.filter(status=Grant.Status.REVOKED, end_reason=Grant.EndReason.EXPIRED).count()
            log(
                f"  t{now - min(expires.values()):+.1f} s: roles gone {len(poller.role_gone)}/{N}, "
                f"sessions ended {len(poller.pid_gone)}/{len(pids)}, portal revoked {revoked}/{N}"
            )
        time.sleep(0.25)
    stop_event.set()
    poller.stop_event.set()
    poller.join(5)
    sessions_after = portal_sessions()
    cpu.stop_event.set()
    # What the burst left queued (its notifications) is part of its bookkeeping: wait for it (at most 60 s).
    drain_until = time.time() + 60
    while OrmQ.objects.exists() and time.time() < drain_until:
        time.sleep(0.25)
    # Backends report their counts at the end of a transaction, at most once a second.
    time.sleep(1.5)
    counters_after = portal_counters()
    work = (
        {name: round((counters_after[name] - counters_before[name]) / N, 1) for name in DB_COUNTERS}
        if sessions_before is not None
        else {}
    )

    # Results ------------------------------------------------------------------------
    sessions_really_ended = 0
    for conn in held.values():
        try:
            conn.execute("SELECT 1")
        except psycopg.Error:
            sessions_really_ended += 1

    rows = Grant.objects.filter(pk__in=ids).values_list(
        "pk", "expires_at", "revoke_requested_at", "revoked_at", "verified_at", "status", "attempts"
    )
    portal = {pk: (exp, req, rev, ver, status, attempts) for pk, exp, req, rev, ver, status, attempts in rows}
    # Lags in seconds after each grant's own expires_at.
    login_lag = [p.refused_at - expires[p.grant_id] for p in probes if p.refused_at is not None]
    role_lag = [poller.role_gone[roles[pk]] - expires[pk] for pk in ids if roles[pk] in poller.role_gone]
    session_lag = [poller.pid_gone[pids[pk]] - expires[pk] for pk in sample if pids[pk] in poller.pid_gone]
    verified_lag = [(v[3] - v[0]).total_seconds() for v in portal.values() if v[3] is not None]
    requested_lag = [(v[1] - v[0]).total_seconds() for v in portal.values() if v[1] is not None]
    revoked_lag = [(v[2] - v[0]).total_seconds() for v in portal.values() if v[2] is not None]
    late_logins = [
        p.last_ok - expires[p.grant_id] for p in probes if p.last_ok is not None and p.last_ok > expires[p.grant_id]
    ]

    failures = AuditEvent.objects.filter(action="grant.revoke_failed").count()
    chain = verify_chain()
    status_counts = dict(Grant.objects.filter(pk__in=ids).values_list("status").annotate(n=Count("pk")))
    expire_tasks = Success.objects.filter(func="grants.tasks.expire_due").count()
    failed_tasks = list(Failure.objects.order_by("started").values_list("func", "result")[:1])
    failed_count = Failure.objects.count()
    first_req = min((v[1] for v in portal.values() if v[1] is not None), default=None)
    last_ver = max((v[3] for v in portal.values() if v[3] is not None), default=None)

    return {
        "config": {
            "grants": N,
            "sample": args.sample,
            "workers": args.workers,
            "batch": args.batch,
            "batch_max": args.batch_max,
            "spread_s": args.spread,
            "lead_s": round(lead, 2),
            "poll_s": args.poll,
            "cpus": os.cpu_count(),
        },
        "provision": provision,
        "expires_at_spread_s": max(expires.values()) - min(expires.values()),
        "rows": {
            "new login refused lag": summarise(login_lag, len(probes)),
            "role gone lag (target poll)": summarise(role_lag, N),
            "session terminated lag": summarise(session_lag, len(pids)),
            "verified_at lag (portal)": summarise(verified_lag, N),
        },
        "diagnostics": {
            "revoke_requested_at lag (portal)": summarise(requested_lag, N),
            "revoked_at lag (portal)": summarise(revoked_lag, N),
        },
        "checks": {
            "grant statuses": status_counts,
            "revoke_failed audit events": failures,
            "audit chain": (
                f"{'verifies' if chain.ok else f'BROKEN at event {chain.bad_event_id}: ' + chain.reason}"
                f" ({chain.count} events)"
            ),
            "logins that succeeded after expires_at": len(late_logins),
            "held sessions found dead at the end": f"{sessions_really_ended}/{len(held)}",
            "login probe errors other than refusal": sum(len(p.other_errors) for p in probes),
            "expire_due tasks run (Success rows, capped by save_limit)": expire_tasks,
            "failed tasks": failed_count
            if not failed_count
            else f"{failed_count}, first: {failed_tasks[0][0]}: {' '.join(str(failed_tasks[0][1]).split())[:300]}",
            "tasks queued by the set-up, purged (provision, notifications)": purged,
            "tasks in the queue at the first expiry": backlog,
            "portal sessions opened from first expiry to the end": sessions_after - sessions_before
            if sessions_before is not None
            else None,
            "target polls": poller.polls,
            "largest poll gap s": round(poller.max_gap, 3),
            "burst drained in s (first revoke_requested_at to last verified_at)": round(
                (last_ver - first_req).total_seconds(), 2
            )
            if first_req and last_ver
            else None,
        },
        # Bookkeeping in the portal's database from the first expiry until the queue is empty again, divided by N
        # (workers, timer, this process's few progress reads).
        "portal_database_per_grant": work,
        "cpu_during_burst": cpu.report(min(expires.values()), max(poller.role_gone.values(), default=time.time())),
        "goal": {"role gone p99 < 5 s": (percentile(role_lag, 99) or float("inf")) < 5 and len(role_lag) == N},
    }


DB_COUNTERS = ("xact_commit", "tup_inserted", "tup_updated", "tup_deleted", "tup_fetched")


def portal_counters() -> dict[str, int]:
    """The bench database's own work so far (pg_stat_database): transactions, rows written and fetched."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(f"SELECT {', '.join(DB_COUNTERS)} FROM pg_stat_database WHERE datname = current_database()")
        return dict(zip(DB_COUNTERS, cursor.fetchone()))


def portal_sessions() -> int:
    """Sessions ever opened on the bench database (pg_stat_database, PostgreSQL 14+)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def print_table(results: dict) -> None:
    cfg, prov = results["config"], results["provision"]

    def fmt(value):
        return "-" if value is None else f"{value:.3f}"

    print()
    print(
        f"Expiry lag: N={cfg['grants']} grants, workers={cfg['workers']}, batch={cfg['batch']}, "
        f"sample={cfg['sample']}, cpus={cfg['cpus']}, expires_at spread {results['expires_at_spread_s']:.1f} s, "
        f"lead {cfg['lead_s']:.0f} s"
    )
    width = 40
    print(f"{'':{width}} {'p50':>8} {'p99':>8} {'max':>8}   n")
    print(
        f"{'provision ' + str(cfg['grants']) + ' grants':{width}} {prov['total_s']:>7.1f}s "
        f"{prov['grants_per_s']:>6.1f}/s"
    )
    for section in ("rows", "diagnostics"):
        if section == "diagnostics":
            print("  diagnostics:")
        for name, s in results[section].items():
            missing = f" ({s['missing']} never seen)" if s["missing"] else ""
            print(f"{name:{width}} {fmt(s['p50']):>8} {fmt(s['p99']):>8} {fmt(s['max']):>8}   {s['n']}{missing}")
    print("  checks:")
    for name, value in results["checks"].items():
        print(f"    {name}: {value}")
    work = results.get("portal_database_per_grant")
    if work:
        print(
            "  portal database from the first expiry to an empty queue, per grant: "
            + ", ".join(f"{name} {value:g}" for name, value in work.items())
        )
    usage = results.get("cpu_during_burst")
    if usage:
        print(
            f"  CPU from first expiry to last role gone ({usage['window_s']:.1f} s, {usage['cpus']} cores, "
            f"{usage['busy']:.0%} busy), CPU seconds:"
        )
        for name, secs in usage["cpu_s"].items():
            print(f"    {secs:6.2f}  {name}")
    met = results["goal"]["role gone p99 < 5 s"]
    print(f"goal p99(role gone) < 5 s: {'MET' if met else 'NOT MET'}")
    print()


if __name__ == "__main__":
    from devtools.pgcluster import DevClusterError

    run_cli(main, errors=(DevClusterError,))
