#!/usr/bin/env python3
"""From an approval's commit to usable credentials, with the real workers busy with notifications too.

    make benchmark-approval                                   # 200 approvals in 60 s
    make benchmark-approval ARGS="--approvals 50 --window 15" # quicker

1. Creates a portal database next to DATABASE_URL's (its name +
   `_approval`, or `--db-name`), migrates it, starts a throwaway PostgreSQL
   target cluster (`devtools.pgcluster`) and a mail server on loopback
   (aiosmtpd) that takes `--mail-delay` seconds to accept each message, as a
   relay across a network does; the portal mails through it (EMAIL_URL).
2. Starts `manage.py qcluster` (`--workers`, default 4) and `manage.py
   expiry_timer`, as in production.
3. Over `--window` seconds, evenly spaced: a requester submits a request
   (its approvers, `--approvers` of them, are mailed) and an approver
   approves it `--decide-after` seconds later (default 2), in this process,
   through the lifecycle. The time of
   the approval's commit is taken in an on-commit hook that runs before any
   task is enqueued.
4. A poller (its own connection, every 20 ms) sees each grant `active` with
   sealed credentials: "credentials readable", seconds after the commit. Then
   the holder reveals them (`reveal_credentials`) and logs in to the target
   with them: "login works".
5. Prints p50 / p95 / max, the mails the server accepted, the deepest queue,
   and checks (statuses, failed tasks, the audit chain); `--json [PATH]`
   writes the same as JSON. Stops everything and drops the database (also
   on Ctrl-C or an error; `--keep` keeps it).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import django
import psycopg
from aiosmtpd.controller import Controller
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import connection, connections, transaction
from django.db.models import Count

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import BenchError, bench_urls, create_database, drop_database, log, percentile, run_cli, write_json  # noqa: E402 (after sys.path.insert: the benchmarks' own modules)
from expiry_lag import Children  # noqa: E402 (after sys.path.insert: the benchmarks' own modules)

from devtools import pgcluster  # noqa: E402 (after sys.path.insert: the repository's own packages)
from devtools.pgcluster import DEMO_DB  # noqa: E402 (after sys.path.insert: the repository's own packages)

TARGET_ENV = "JIT_BENCH_PG_DSN"
JUSTIFICATION = "Benchmark: approval to usable credentials (benchmarks/approval_latency.py)"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--approvals", type=int, default=200, help="approvals in the window (default 200)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds the approvals are spread over (default 60)")
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("Q_WORKERS", 4)),
        help="qcluster workers (Q_WORKERS; default 4)",
    )
    parser.add_argument(
        "--approvers", type=int, default=3, help="approvers of the profile, each mailed about each request (default 3)"
    )
    parser.add_argument(
        "--decide-after", type=float, default=2.0, help="seconds from a submission to its approval (default 2)"
    )
    parser.add_argument(
        "--mail-delay", type=float, default=0.2, help="seconds the mail server takes per message (default 0.2)"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="give up this many seconds after the last approval (default 120)"
    )
    parser.add_argument("--db-name", help="portal database to create (default: DATABASE_URL's name + '_approval')")
    parser.add_argument(
        "--json", nargs="?", const="-", metavar="PATH", help="also write the results as JSON to PATH (or stdout)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the portal database, the target cluster and the logs")
    args = parser.parse_args(argv)
    if args.approvals < 1 or args.workers < 1 or args.approvers < 1 or args.window < 0 or args.mail_delay < 0:
        parser.error("--approvals, --workers and --approvers must be positive, --window and --mail-delay not negative")
    return args


class SlowMail:
    """An SMTP server on loopback that accepts every message after `delay` seconds, and counts them."""

    def __init__(self, delay: float):
        self.delay, self.count, self.lock = delay, 0, threading.Lock()
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                await asyncio.sleep(outer.delay)
                with outer.lock:
                    outer.count += 1
                return "250 OK"

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def start(self):
        self.controller.start()

    def stop(self):
        self.controller.stop()


def main(argv=None) -> int:
    args = parse_args(argv)
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url:
        raise BenchError("Set DATABASE_URL to the portal's PostgreSQL (make benchmark-approval does).")
    bench_url, maintenance_url, bench_db = bench_urls(database_url, args.db_name, suffix="_approval")

    if not pgcluster.available():
        raise BenchError("PostgreSQL server programs are missing under /usr/lib/postgresql (`make system-deps`).")
    work_dir = Path(tempfile.mkdtemp(prefix="jitbench-approval-"))
    os.chmod(work_dir, 0o711)  # the target cluster runs as the postgres OS user
    cluster = pgcluster.DevCluster(work_dir / "target")
    mail = SlowMail(args.mail_delay)
    state: dict = {}
    db_created = django_ready = mail_started = False
    try:
        log(f"portal database {bench_db} (fresh), work dir {work_dir}")
        create_database(maintenance_url, bench_db)
        db_created = True
        cluster.start()
        cluster.setup_demo_roles()
        mail.start()
        mail_started = True
        log(
            f"target cluster on 127.0.0.1:{cluster.port}, mail server on 127.0.0.1:{mail.port} "
            f"({args.mail_delay:g} s a message)"
        )
        os.environ.update(
            {
                "DATABASE_URL": bench_url,
                "DJANGO_SETTINGS_MODULE": "jitportal.settings",
                "JITPORTAL_DEMO": "true",
                TARGET_ENV: cluster.admin_dsn,
                "Q_WORKERS": str(args.workers),
                "EMAIL_URL": f"smtp://127.0.0.1:{mail.port}",
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
        logging.getLogger("django-q").setLevel(logging.WARNING)
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every connection
        results = run(args, cluster, mail, work_dir, child_env, state)
        print_table(results)
        if args.json:
            write_json(results, args.json)
        return 0
    finally:
        children = state.get("children")
        if children is not None:
            log("stopping qcluster and expiry_timer")
            children.stop()
        poller = state.get("poller")
        if poller is not None:
            poller.stop_event.set()
            poller.join(5)
        if django_ready:
            connections.close_all()
        if mail_started:
            mail.stop()
        try:
            cluster.stop()
        except Exception as exc:  # noqa: BLE001 (clean up the rest anyway)
            log(f"stopping the target cluster failed: {exc}")
        if args.keep:
            log(f"kept: portal database {bench_db}, logs in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
            if db_created:
                drop_database(maintenance_url, bench_db)
            log("cleaned up (portal database dropped, target cluster removed)")


class Poller(threading.Thread):
    """Every 20 ms: which awaited grants are active with credentials; then reveal them and log in with them."""

    def __init__(self, holders: dict):
        super().__init__(name="grant-poller", daemon=True)
        self.holders = holders  # request id -> requester, filled as requests are approved
        self.waiting: set[int] = set()
        self.lock = threading.Lock()
        self.readable: dict[int, float] = {}
        self.login: dict[int, float] = {}
        self.login_errors: dict[int, str] = {}
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def expect(self, request_id: int) -> None:
        with self.lock:
            self.waiting.add(request_id)

    def run(self):
        from grants import lifecycle  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)
        from grants.models import Grant  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

        try:
            while not self.stop_event.is_set():
                with self.lock:
                    waiting = list(self.waiting)
                if waiting:
                    ready = list(
                        Grant.objects.filter(request_id__in=waiting, status=Grant.Status.ACTIVE)
                        .exclude(sealed_credentials="")
                        .values_list("request_id", "pk")
                    )
                    seen = time.time()
                    for request_id, grant_id in ready:
                        self.readable[request_id] = seen
                        with self.lock:
                            self.waiting.discard(request_id)
                        try:
                            credentials = lifecycle.reveal_credentials(grant_id, actor=self.holders[request_id])
                            psycopg.connect(credentials["dsn"], connect_timeout=5).close()
                            self.login[request_id] = time.time()
                        except Exception as exc:  # noqa: BLE001 (reported)
                            self.login_errors[request_id] = f"{type(exc).__name__}: {exc}"[:200]
                self.stop_event.wait(0.02)
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            self.error = exc
        finally:
            connection.close()


def run(args, cluster, mail: SlowMail, work_dir: Path, child_env: dict, state: dict) -> dict:
    from django.contrib.auth.models import Group  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)
    from django_q.models import Failure, OrmQ, Success  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

    from audit.log import verify as verify_chain  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)
    from grants import lifecycle  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)
    from grants.models import AccessProfile, Grant, Target  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

    N = args.approvals
    User = get_user_model()
    engineers = Group.objects.create(name="engineers")
    approvers_group = Group.objects.create(name="db-approvers")
    approvers = User.objects.bulk_create(
        User(username=f"approver-{i}", email=f"approver-{i}@example.test", password=make_password(None))
        for i in range(args.approvers)
    )
    approvers_group.user_set.add(*approvers)
    users = User.objects.bulk_create(
        User(username=f"bench-{i:04d}", email=f"bench-{i:04d}@example.test", password=make_password(None))
        for i in range(N)
    )
    engineers.user_set.add(*users)
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
        approver_group=approvers_group,
    )
    profile.requestable_by.add(engineers)

    children = Children(child_env, work_dir)
    state["children"] = children
    children.start("qcluster", "qcluster")
    children.start("expiry_timer", "expiry_timer")
    time.sleep(3)  # the workers connect and start polling
    holders: dict[int, object] = {}
    poller = Poller(holders)
    state["poller"] = poller
    poller.start()
    log(f"started qcluster ({args.workers} workers) and expiry_timer; {N} approvals over {args.window:g} s")

    committed: dict[int, float] = {}
    deepest = 0
    started = time.time()
    pace = args.window / N
    # Each request is approved `--decide-after` seconds after it was submitted (the approvers were mailed meanwhile).
    lag = max(1, round(args.decide_after / pace)) if pace else 1
    submitted: list[int] = []
    for i in range(N + lag):
        children.check()
        time.sleep(max(0.0, started + i * pace - time.time()))
        if i < N:
            req = lifecycle.submit_request(
                requester=users[i], profile=profile, duration=datetime.timedelta(hours=1), justification=JUSTIFICATION
            )
            holders[req.pk] = users[i]
            submitted.append(req.pk)
        if i >= lag:
            pk = submitted[i - lag]
            with transaction.atomic():
                # Registered before the lifecycle's own hooks, so it runs first, right after the commit.
                transaction.on_commit(lambda pk=pk: committed.__setitem__(pk, time.time()))
                lifecycle.approve_request(pk, actor=approvers[i % len(approvers)], comment="benchmark")
            poller.expect(pk)
        if i % 10 == 0:
            deepest = max(deepest, OrmQ.objects.count())
    last_approval = time.time()
    while time.time() < last_approval + args.timeout:
        children.check()
        if poller.error is not None:
            raise BenchError(f"poller failed: {poller.error}")
        deepest = max(deepest, OrmQ.objects.count())
        if len(poller.login) + len(poller.login_errors) == N:
            break
        time.sleep(0.25)
    else:
        log("timeout: giving up on what is left")
    # Let the remaining notifications go out, for the mail count.
    drain_until = time.time() + 60
    while OrmQ.objects.exists() and time.time() < drain_until:
        time.sleep(0.25)
    poller.stop_event.set()
    poller.join(5)

    readable = [poller.readable[pk] - committed[pk] for pk in committed if pk in poller.readable]
    login = [poller.login[pk] - committed[pk] for pk in committed if pk in poller.login]
    # The provision tasks' own record: how long each waited in the queue after the commit, and ran.
    waited, ran = [], []
    grant_requests = dict(Grant.objects.values_list("pk", "request_id"))
    for args_, began, ended in Success.objects.filter(func="grants.tasks.provision").values_list(
        "args", "started", "stopped"
    ):
        pk = grant_requests.get(args_[0]) if args_ else None
        if pk in committed:
            # django-q2's `started` is when the task was enqueued.
            waited.append(began.timestamp() - committed[pk])
            ran.append(ended.timestamp() - committed[pk])
    chain = verify_chain()
    statuses = dict(Grant.objects.values_list("status").annotate(n=Count("pk")))
    failed = Failure.objects.count()
    return {
        "config": {
            "approvals": N,
            "window_s": args.window,
            "workers": args.workers,
            "approvers": args.approvers,
            "mail_delay_s": args.mail_delay,
            "cpus": os.cpu_count(),
            "load": round(os.getloadavg()[0], 2),
        },
        "rows": {"credentials readable": summarise(readable, N), "login works": summarise(login, N)},
        "diagnostics": {"provision task enqueued": summarise(waited, N), "provision task done": summarise(ran, N)},
        "checks": {
            "grant statuses": statuses,
            "login errors": len(poller.login_errors)
            and f"{len(poller.login_errors)}, first: {next(iter(poller.login_errors.values()))}",
            "mails accepted by the mail server": mail.count,
            "deepest task queue": deepest,
            "tasks left in the queue": OrmQ.objects.count(),
            "failed tasks": failed,
            "audit chain": f"{'verifies' if chain.ok else 'BROKEN at event ' + str(chain.bad_event_id)} "
            f"({chain.count} events)",
        },
        "goal": {
            "credentials readable p95 < 2 s": (percentile(readable, 95) or float("inf")) < 2 and len(readable) == N
        },
    }


def summarise(values: list[float], expected: int) -> dict:
    return {
        "n": len(values),
        "missing": expected - len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values) if values else None,
    }


def print_table(results: dict) -> None:
    cfg = results["config"]

    def fmt(value):
        return "-" if value is None else f"{value:.3f}"

    print()
    print(
        f"Approval to usable credentials: {cfg['approvals']} approvals over {cfg['window_s']:g} s, "
        f"workers={cfg['workers']}, "
        f"{cfg['approvers']} approvers mailed per request, mail {cfg['mail_delay_s']:g} s a message, "
        f"cpus={cfg['cpus']}, "
        f"load {cfg['load']}"
    )
    print("| seconds after the approval's commit | p50 | p95 | max | n |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, s in [*results["rows"].items(), *(("(" + k + ")", v) for k, v in results["diagnostics"].items())]:
        missing = f" ({s['missing']} never)" if s["missing"] else ""
        print(f"| {name} | {fmt(s['p50'])} | {fmt(s['p95'])} | {fmt(s['max'])} | {s['n']}{missing} |")
    print("  checks:")
    for name, value in results["checks"].items():
        print(f"    {name}: {value}")
    met = results["goal"]["credentials readable p95 < 2 s"]
    print(f"goal p95(credentials readable) < 2 s: {'MET' if met else 'NOT MET'}")
    print()


if __name__ == "__main__":
    from devtools.pgcluster import DevClusterError

    run_cli(main, errors=(DevClusterError,))
