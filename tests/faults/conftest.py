"""The fault suite's harness: real `qcluster` and `expiry_timer` processes on the test database, real targets.

Each scenario starts the processes it needs, makes a few short grants
through the lifecycle, injects its fault (kill -9 by process id, a target
stopped or frozen with SIGSTOP, the portal database's connections killed
and new ones refused), and ends with `final_checks`. The minute sweep's
schedule is removed first, so that what recovers is the timer and the
workers, not a sweep up to a minute later.
"""

import datetime
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone
from django_q.models import OrmQ, Schedule

from audit.log import verify
from audit.models import AuditEvent
from devtools import pgcluster
from grants import lifecycle
from grants.models import AccessProfile, Grant, Target
from grants.tests.conftest import JUSTIFICATION, groups, otto, profile, target  # noqa: F401 (fixtures)

BASE = Path(__file__).resolve().parents[2]
END_STATES = {Grant.Status.REVOKED, Grant.Status.FAILED}


def wait_for(predicate, *, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"gave up waiting {seconds} s for {what}")


def portal_url() -> str:
    db = connection.settings_dict
    return f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Fleet:
    """The portal's background processes, each started, killed (-9, by pid) and stopped by name."""

    def __init__(self, env: dict, logs: Path):
        self.env, self.logs, self.procs, self.files = env, logs, {}, []

    def start(self, name: str, *args: str) -> subprocess.Popen:
        command = {"qcluster": ["qcluster"], "timer": ["expiry_timer", "--max-sleep", "1"]}[name.rstrip("0123456789")]
        log = open(self.logs / f"{name}.log", "a+")  # noqa: SIM115 (the child process writes it while it runs; closed when it has stopped)
        self.files.append(log)
        proc = subprocess.Popen(
            [sys.executable, "manage.py", *command, *args],
            cwd=BASE,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def kill9(self, name: str) -> None:
        """Kill the process and the workers it forked, at once, as a crash would."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for name in list(self.procs):
            try:
                os.killpg(self.procs[name].pid, signal.SIGKILL)  # qcluster's forked workers, should any be left
            except ProcessLookupError:
                pass
        self.procs.clear()
        for log in self.files:
            log.close()


@pytest.fixture
def fleet(transactional_db, pg_target_env, tmp_path):
    Schedule.objects.all().delete()  # no minute sweep: the timer and the workers must recover on their own
    env = {**os.environ, "DATABASE_URL": portal_url(), "Q_WORKERS": "2", "JIT_TEST_PG_DSN": pg_target_env.admin_dsn}
    fleet = Fleet(env, tmp_path)
    yield fleet
    fleet.stop_all()
    for log in sorted(tmp_path.glob("*.log")):  # shown when the scenario fails
        lines = [line for line in log.read_text().splitlines() if not line.startswith(("Enqueued", "Processed"))]
        print(f"--- {log.name} (last lines)\n" + "\n".join(lines[-40:]))


@pytest.fixture
def second_cluster():
    """A second PostgreSQL target of our own, to stop or freeze while the session's target stays healthy."""
    base_dir = Path(tempfile.mkdtemp(prefix="jitportal-fault-pg-"))
    cluster = pgcluster.DevCluster(base_dir)
    try:
        cluster.start()
        cluster.setup_demo_roles()
        yield cluster
    finally:
        resume(cluster)
        cluster.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


def postmaster_pid(cluster) -> int:
    return int((cluster.data_dir / "postmaster.pid").read_text().split()[0])


def freeze(cluster) -> None:
    """SIGSTOP the target's postmaster: new connections hang (the kernel accepts them, nobody answers)."""
    os.kill(postmaster_pid(cluster), signal.SIGSTOP)


def resume(cluster) -> None:
    try:
        os.kill(postmaster_pid(cluster), signal.SIGCONT)
    except (FileNotFoundError, ProcessLookupError):
        pass


@pytest.fixture
def second_profile(second_cluster, groups, fleet, monkeypatch):  # noqa: F811 (fixture)
    monkeypatch.setenv("JIT_FAULT_PG2_DSN", second_cluster.admin_dsn)
    fleet.env["JIT_FAULT_PG2_DSN"] = second_cluster.admin_dsn
    other = Target.objects.create(
        name="second-cluster",
        kind="postgres",
        secret_env="JIT_FAULT_PG2_DSN",
        config={"host": second_cluster.host, "port": second_cluster.port, "dbname": "appdb"},
    )
    p = AccessProfile.objects.create(
        name="second-readonly",
        title="second read-only",
        target=other,
        scope={"roles": ["app_readonly"]},
        max_duration=datetime.timedelta(hours=1),
        approver_group=groups["db-approvers"],
    )
    p.requestable_by.add(groups["engineers"])
    return p


def make_grants(n: int, profile, *, seconds: float, approver, prefix: str = "f") -> list[int]:  # noqa: F811 (fixture name)
    """Submit and approve `n` grants of `profile` lasting `seconds`, one person each; return the grant ids."""
    engineers = profile.requestable_by.get()
    ids = []
    for i in range(n):
        user, _ = get_user_model().objects.get_or_create(username=f"{prefix}{profile.pk}x{i}")
        user.groups.add(engineers)
        req = lifecycle.submit_request(
            requester=user, profile=profile, duration=datetime.timedelta(seconds=seconds), justification=JUSTIFICATION
        )
        lifecycle.approve_request(req.pk, actor=approver)
        ids.append(Grant.objects.get(request=req).pk)
    return ids


def statuses(ids) -> dict[int, str]:
    return dict(Grant.objects.filter(pk__in=ids).values_list("pk", "status"))


def all_in(ids, wanted) -> bool:
    return set(statuses(ids).values()) <= set(wanted)


def final_checks(
    ids, clusters, *, since: float, what: str, states=(Grant.Status.REVOKED,), timeout: float = 30
) -> float:
    """Wait until every grant reached an end state, then check the target and the trail; return the seconds it took.

    Roles gone on every target, no session of a grant role, nothing
    provisioned or revoked twice, no role on a target that no live grant
    explains, and `audit verify` intact.
    """
    try:
        wait_for(lambda: all_in(ids, END_STATES), seconds=timeout, what=f"every grant to end ({what})")
    except pytest.fail.Exception:
        rows = list(
            Grant.objects.filter(pk__in=ids).values_list("pk", "status", "attempts", "next_attempt_at", "last_error")
        )
        queue = list(OrmQ.objects.values_list("lock", flat=True))
        pytest.fail(f"not every grant ended ({what}) at {timezone.now()}:\n{rows}\nqueue locks: {queue}")
    took = time.monotonic() - since
    assert set(statuses(ids).values()) <= set(states), statuses(ids)
    live = {
        f"jit_g{pk}"
        for pk in Grant.objects.filter(status__in=[Grant.Status.ACTIVE, Grant.Status.REVOKING]).values_list(
            "pk", flat=True
        )
    }
    for cluster in clusters:
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as conn:
            roles = {r for (r,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'jit\\_g%'")}
            sessions = conn.execute("SELECT usename FROM pg_stat_activity WHERE usename LIKE 'jit\\_g%'").fetchall()
        ours = {f"jit_g{pk}" for pk in ids}
        assert not roles & ours, f"roles left on the target: {sorted(roles & ours)}"
        orphans = {r for r in roles - live if int(r[5:]) >= min(ids)}
        assert not orphans, f"orphans on the target: {sorted(orphans)}"
        assert not sessions, f"sessions left: {sessions}"
    for action in ("grant.provisioned", "grant.revoked"):
        counts = {}
        for object_id in AuditEvent.objects.filter(action=action, object_type="grant").values_list(
            "object_id", flat=True
        ):
            counts[object_id] = counts.get(object_id, 0) + 1
        twice = {k: v for k, v in counts.items() if v > 1}
        assert not twice, f"{action} more than once: {twice}"
    result = verify()
    assert result.ok, result.reason
    print(f"\n[fault] {what}: {len(ids)} grants back on track {took:.1f} s after the fault ended")
    return took


class PortalDatabase:
    """Faults of the portal's own (throwaway test) database: its connections killed, new ones refused."""

    def __init__(self):
        self.name = connection.settings_dict["NAME"]
        with connection.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            self.own_pid = cur.fetchone()[0]  # the test's own connection survives every fault
        db = connection.settings_dict
        self.admin = psycopg.connect(
            host=db["HOST"] or "127.0.0.1",
            port=db["PORT"] or 5432,
            user=db["USER"] or "postgres",
            dbname="postgres",
            autocommit=True,
        )

    def kill_connections(self) -> int:
        rows = self.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
            [self.name, self.own_pid],
        ).fetchall()
        return len(rows)

    def refuse_connections(self, refuse: bool) -> None:
        # A property of the throwaway test database only, never of the shared server.
        self.admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS {"false" if refuse else "true"}')

    def close(self):
        self.refuse_connections(False)
        self.admin.close()


@pytest.fixture
def portal_db(transactional_db):
    db = PortalDatabase()
    yield db
    db.close()


@pytest.fixture
def ana_on_second(second_profile, otto):  # noqa: F811 (fixture)
    """An active-to-be grant of a profile whose extensions need an approver."""
    return Grant.objects.get(pk=make_grants(1, second_profile, seconds=600, approver=otto, prefix="ext")[0])


from grants.tests.conftest import ana, marc  # noqa: E402, F401 (fixtures for the in-process scenarios)
