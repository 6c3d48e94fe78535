"""How fast each connector issues and removes access, on real servers.

    make benchmark-connectors                 # defaults below
    make benchmark-connectors ARGS="--ssh 2000 --mysql 300 --postgres 300"

Rows:
- SSH: certificates signed per second (the requester's key, and a key pair
  the portal generates), and revocations per second (each rewrites and
  re-reads the KRL).
- MariaDB (the machine's server on 127.0.0.1:3306, root) and PostgreSQL (a
  throwaway cluster): accounts provisioned per second, and revocations per
  second with an open session on every tenth account, each revocation
  verified by reading the server again (`is_present`). Per-revocation
  latency p50 / p99 / max is what one expiring grant costs a worker.

The end-to-end expiry lag with the real workers is `benchmarks/expiry_lag.py`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import psycopg
import pymysql

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jitportal.settings")
os.environ.setdefault("JITPORTAL_DEMO", "true")  # connectors only: no identity provider needed

import django  # noqa: E402 (after sys.path.insert and the settings' environment)

django.setup()

from devtools import pgcluster  # noqa: E402 (after django.setup(): the connectors import the models)
from grants.connectors.mysql import MySQLConnector  # noqa: E402 (after django.setup(): the connectors import the models)
from grants.connectors.postgres import PostgresConnector  # noqa: E402 (after django.setup(): the connectors import the models)
from grants.connectors.ssh import SSHConnector  # noqa: E402 (after django.setup(): the connectors import the models)
from grants.connectors.ssh import ca as sshca  # noqa: E402 (after django.setup(): the connectors import the models)

FIRST_ID = 900_000_000  # far from any real grant id


def grant(n, scope, params=None, minutes=30):
    now = datetime.datetime.now(datetime.UTC)
    return types.SimpleNamespace(
        pk=FIRST_ID + n,
        scope=scope,
        params=params or {},
        starts_at=now,
        expires_at=now + datetime.timedelta(minutes=minutes),
    )


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def lat(values):
    return f"{pct(values, 50) * 1000:.1f} / {pct(values, 99) * 1000:.1f} / {max(values) * 1000:.1f}"


def timed(fn, items):
    times = []
    start = time.perf_counter()
    for item in items:
        t = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t)
    return time.perf_counter() - start, times


def bench_ssh(n, rows):
    work = Path(tempfile.mkdtemp(prefix="jit-bench-ssh-"))
    try:
        ca = work / "ca"
        sshca.generate_ca(ca)
        os.environ["JIT_BENCH_SSH_CA"] = str(ca)
        target = types.SimpleNamespace(
            name="bench-ssh", kind="ssh", config={"host": "127.0.0.1"}, secret_env="JIT_BENCH_SSH_CA"
        )
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "id")], check=True)
        key = (work / "id.pub").read_text()
        scope = {"principals": ["deploy"]}
        with SSHConnector(target) as c:
            total, times = timed(lambda g: c.provision(g), [grant(i, scope, {"public_key": key}) for i in range(n)])
            rows.append(("SSH: sign certificate (user's key)", n, f"{n / total:,.0f}/s", lat(times)))
            m = max(1, n // 4)
            total, times = timed(lambda g: c.provision(g), [grant(n + i, scope) for i in range(m)])
            rows.append(("SSH: sign certificate + generate key pair", m, f"{m / total:,.0f}/s", lat(times)))
            r = min(n, 200)
            total, times = timed(lambda g: (c.revoke(g), c.is_present(g)), [grant(i, scope) for i in range(r)])
            rows.append(("SSH: revoke (KRL rewritten, read back)", r, f"{r / total:,.0f}/s", lat(times)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _sessions_then_revoke(connector, grants, open_session, rows, label):
    creds = []
    total, times = timed(lambda g: creds.append(connector.provision(g).credentials), grants)
    rows.append((f"{label}: provision account", len(grants), f"{len(grants) / total:,.0f}/s", lat(times)))
    sessions = [open_session(c) for c in creds[::10]]
    total, times = timed(
        lambda g: (connector.revoke(g), connector.is_present(g) and sys.exit(f"{label}: still present")), grants
    )
    rows.append(
        (f"{label}: revoke + verify (1 in 10 with a session)", len(grants), f"{len(grants) / total:,.0f}/s", lat(times))
    )
    for s in sessions:
        try:
            s.close()
        except Exception:  # noqa: BLE001 (clean-up at the end: a session already gone is fine)
            pass


def bench_mysql(n, rows):
    os.environ["JIT_BENCH_MYSQL"] = "mysql://root@127.0.0.1:3306/"
    root = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    with root.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS jit_bench")
        cur.execute("CREATE TABLE IF NOT EXISTS jit_bench.t (id INT)")
    target = types.SimpleNamespace(
        name="bench-mysql",
        kind="mysql",
        config={"host": "127.0.0.1", "port": 3306, "database": "jit_bench"},
        secret_env="JIT_BENCH_MYSQL",
    )
    scope = {"privileges": [{"privileges": "SELECT", "on": "jit_bench.*"}]}

    def open_session(c):
        return pymysql.connect(
            host="127.0.0.1", port=3306, user=c["username"], password=c["password"], database="jit_bench"
        )

    try:
        with MySQLConnector(target) as c:
            _sessions_then_revoke(c, [grant(i, scope) for i in range(n)], open_session, rows, "MariaDB")
    finally:
        with root.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS jit_bench")
        root.close()


def bench_postgres(n, rows):
    base = Path(tempfile.mkdtemp(prefix="jit-bench-pg-"))
    cluster = pgcluster.DevCluster(base)
    try:
        cluster.start()
        cluster.setup_demo_roles()
        os.environ["JIT_BENCH_PG"] = cluster.admin_dsn
        target = types.SimpleNamespace(
            name="bench-pg",
            kind="postgres",
            config={"host": cluster.host, "port": cluster.port, "dbname": "appdb"},
            secret_env="JIT_BENCH_PG",
        )
        with PostgresConnector(target) as c:
            _sessions_then_revoke(
                c,
                [grant(i, {"roles": ["app_readonly"]}) for i in range(n)],
                lambda cr: psycopg.connect(cr["dsn"]),
                rows,
                "PostgreSQL",
            )
    finally:
        cluster.destroy()  # its files too, wherever they went


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ssh", type=int, default=1000, help="certificates to sign")
    parser.add_argument("--mysql", type=int, default=200, help="MariaDB accounts")
    parser.add_argument("--postgres", type=int, default=200, help="PostgreSQL roles")
    args = parser.parse_args()
    rows = []
    if args.ssh:
        bench_ssh(args.ssh, rows)
    if args.mysql:
        bench_mysql(args.mysql, rows)
    if args.postgres:
        bench_postgres(args.postgres, rows)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'operation':{width}}  {'n':>5}  {'rate':>9}  latency p50 / p99 / max (ms)")
    for name, n, rate, latency in rows:
        print(f"{name:{width}}  {n:>5}  {rate:>9}  {latency}")
    print(f"\n({os.cpu_count()} cores; one connector instance, one connection, in one process)")


if __name__ == "__main__":
    main()
