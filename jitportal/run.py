"""Start the demo portal: migrate, load the demo, start web, workers and the expiry timer.

`make run` calls this. It chooses demo mode (JITPORTAL_DEMO=true) for itself
and every process it starts; without that choice, or an identity provider,
the portal refuses to start. Ctrl-C stops everything it started.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
HOST = os.environ.get("JITPORTAL_HOST", "127.0.0.1")
PORT = os.environ.get("JITPORTAL_PORT", "8000")


def manage(*args, **kwargs):
    return subprocess.run([sys.executable, str(BASE / "manage.py"), *args], check=True, **kwargs)


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jitportal.settings")
    os.environ["JITPORTAL_DEMO"] = "true"
    os.environ.setdefault("DEBUG", "1")
    import django

    django.setup()
    from grants import devcluster
    from grants.management.commands.load_demo import DEMO_USERS

    manage("migrate", "--no-input", stdout=subprocess.DEVNULL)
    cluster = None
    if devcluster.available():
        cluster = devcluster.DevCluster(BASE / "var" / "demo-pg")
        cluster.start()
        cluster.setup_demo_roles()
        os.environ["JIT_DEMO_PG_DSN"] = cluster.admin_dsn
        manage("load_demo", "--pg-host", cluster.host, "--pg-port", str(cluster.port))
        target_note = f"Demo target: PostgreSQL on {cluster.host}:{cluster.port}, database appdb (a throwaway cluster in var/demo-pg)."
    else:
        manage("load_demo")
        target_note = "PostgreSQL server programs are not installed: the demo target shows as unreachable and its grants fail with that message."
    from grants import sshca

    ca = BASE / "var" / "demo-ssh" / "ca"
    if not ca.exists():
        ca.parent.mkdir(parents=True, exist_ok=True)
        sshca.generate_ca(ca)
    os.environ["JIT_DEMO_SSH_CA"] = str(ca)
    manage("shell", "-c", "from grants.tasks import check_targets; check_targets()")

    commands = {
        "web server": ["runserver", f"{HOST}:{PORT}", "--noreload"],
        "workers": ["qcluster"],
        "expiry timer": ["expiry_timer"],
    }

    def start(name):
        return subprocess.Popen([sys.executable, "manage.py", *commands[name]], cwd=BASE)

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
