"""Start the demo portal: migrate, load the demo, start web, workers and the expiry timer.

`make run` calls this. It chooses demo mode (JITPORTAL_DEMO=true) for itself
and every process it starts; without that choice, or an identity provider,
the portal refuses to start. Ctrl-C stops everything it started.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import django
import psycopg
from django.conf import settings

from devtools import pgcluster
from grants.connectors.ssh import ca as sshca

BASE = Path(__file__).resolve().parent.parent
HOST = os.environ.get("JITPORTAL_HOST", "127.0.0.1")
PORT = os.environ.get("JITPORTAL_PORT", "8000")


def manage(*args, **kwargs):
    return subprocess.run([sys.executable, str(BASE / "manage.py"), *args], check=True, **kwargs)


def start_demo_target(var: Path):
    """Start the throwaway target cluster in var/demo-pg; return it
    and the banner's line, or None and one line saying why not."""
    cluster = pgcluster.DevCluster(var / "demo-pg")
    try:
        cluster.start()
        cluster.setup_demo_roles()
    except (pgcluster.DevClusterError, psycopg.Error, OSError) as exc:
        with contextlib.suppress(pgcluster.DevClusterError, OSError):
            cluster.stop()
        why = getattr(exc, "summary", "") or next(iter(str(exc).strip().splitlines()), "") or type(exc).__name__
        return None, f"Demo target unreachable (its grants fail): {why}"
    where = f"in {var / 'demo-pg'}"
    if cluster.run_dir != cluster.base_dir:
        where = f"kept in {cluster.run_dir}, where the {pgcluster.OS_USER} user can reach it"
    return (
        cluster,
        f"Demo target: PostgreSQL on {cluster.host}:{cluster.port}, database appdb (a throwaway cluster {where}).",
    )


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jitportal.settings")
    os.environ["JITPORTAL_DEMO"] = "true"
    os.environ.setdefault("DEBUG", "1")
    # gunicorn serves the demo, as it does production: a download that fails midway is then a broken transfer
    # (no chunked terminator), where runserver would end it like a complete file. It serves the static files
    # itself (whitenoise), from STATIC_ROOT, which collectstatic fills below.
    os.environ["SERVE_STATIC"] = "true"

    django.setup()

    from grants.management.commands.load_demo import DEMO_USERS  # noqa: PLC0415 (after django.setup(): it imports the models)

    var = Path(settings.VAR_DIR)
    manage("migrate", "--no-input", stdout=subprocess.DEVNULL)
    manage("collectstatic", "--no-input", stdout=subprocess.DEVNULL)
    cluster, target_note = start_demo_target(var)
    if cluster is not None:
        os.environ["JIT_DEMO_PG_DSN"] = cluster.admin_dsn
        manage("load_demo", "--pg-host", cluster.host, "--pg-port", str(cluster.port))
    else:
        manage("load_demo")

    ca = var / "demo-ssh" / "ca"
    if not ca.exists():
        ca.parent.mkdir(parents=True, exist_ok=True)
        sshca.generate_ca(ca)
    os.environ["JIT_DEMO_SSH_CA"] = str(ca)
    manage("shell", "-c", "from grants.tasks import check_targets; check_targets()")

    commands = {
        "web server": [
            "-m",
            "gunicorn",
            "jitportal.wsgi:application",
            "--bind",
            f"{HOST}:{PORT}",
            "--workers",
            "3",
            "--timeout",
            "60",
            "--access-logfile",
            "-",
            "--no-control-socket",
        ],
        "workers": ["manage.py", "qcluster"],
        "expiry timer": ["manage.py", "expiry_timer"],
    }

    def start(name):
        return subprocess.Popen([sys.executable, *commands[name]], cwd=BASE)

    procs = {name: start(name) for name in commands}
    print("\n" + "=" * 70)
    print(f"jitportal demo is starting: open http://{HOST}:{PORT}/")
    print("Demo mode (JITPORTAL_DEMO=true): local passwords, no identity provider; not for real access.")
    print("Demo users (username / password):")
    for username, password, _first, _last, role in DEMO_USERS:
        print(f"  {username:6} / {password:16} {role}")
    print(target_note)
    print(f"Demo SSH profile: certificates signed by {ca} (hosts would trust {ca}.pub).")
    print("Ctrl-C stops the web server, the workers and the timer.")
    print("=" * 70 + "\n", flush=True)

    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    restarts: list[float] = []
    try:
        while not stopping and procs["web server"].poll() is None:
            time.sleep(0.3)
            for name, proc in procs.items():
                if name == "web server" or proc.poll() is None:
                    continue
                # The workers and the timer ride out database errors themselves; one that
                # exits anyway is started again (at most 5 times a minute), as a supervisor would.
                restarts = [t for t in restarts if t > time.monotonic() - 60]
                if len(restarts) >= 5:
                    print(f"The {name} exited (status {proc.returncode}) too often; stopping the demo.", flush=True)
                    stopping = True
                    break
                restarts.append(time.monotonic())
                print(f"The {name} exited (status {proc.returncode}); starting it again.", flush=True)
                procs[name] = start(name)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        if cluster is not None:
            cluster.stop()
        print("jitportal stopped.")


if __name__ == "__main__":
    main()
