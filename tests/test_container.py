"""The container's pieces that need no podman: compose.yaml's structure, the image's health check.

`make test-image` (tests/image) builds the image and runs the stack for real.
"""

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parents[1]
PORTAL_SERVICES = ("migrate", "web", "worker", "timer")


def compose():
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_web_worker_and_timer_run_from_the_one_image_after_the_migrations():
    services = compose()["services"]
    assert {services[name]["image"] for name in PORTAL_SERVICES} == {"${JITPORTAL_IMAGE:-jitportal:latest}"}
    assert services["worker"]["command"] == ["python", "manage.py", "qcluster"]
    assert services["timer"]["command"] == ["python", "manage.py", "expiry_timer"]
    assert "command" not in services["web"]  # the image's gunicorn
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    for name in ("web", "worker", "timer"):
        assert services[name]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}


def test_every_secret_file_the_portal_reads_is_mounted_and_no_secret_is_in_the_environment():
    spec = compose()
    declared = set(spec["secrets"])
    for name in (*PORTAL_SERVICES, "db"):
        service = spec["services"][name]
        mounted = {f"/run/secrets/{secret}" for secret in service["secrets"]}
        assert set(service["secrets"]) <= declared
        # AUDIT_HEAD_FILE is where the worker appends the heads it exports (a volume), not a secret it reads.
        files = {
            value for key, value in service["environment"].items() if key.endswith("_FILE") and key != "AUDIT_HEAD_FILE"
        }
        assert files and files <= mounted, (name, files - mounted)
        if "AUDIT_HEAD_FILE" in service["environment"]:
            head_dir = service["environment"]["AUDIT_HEAD_FILE"].rsplit("/", 1)[0]
            assert any(str(volume).split(":")[1:2] == [head_dir] for volume in service.get("volumes", [])), (
                name,
                head_dir,
            )
        for key in service["environment"]:
            assert not key.endswith(("SECRET", "PASSWORD", "SECRET_KEY", "DSN")), (name, key)
        # The password comes from DATABASE_PASSWORD_FILE (the portal) or POSTGRES_PASSWORD_FILE (PostgreSQL).
        assert urlsplit(service["environment"].get("DATABASE_URL", "postgres://db")).password is None


def healthcheck(port):
    # A proxy for outgoing traffic (set for the IdP, say) must not swallow the check of our own port.
    env = {
        "PATH": "/usr/bin:/bin",
        "PORT": str(port),
        "http_proxy": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    argv = [sys.executable, "-m", "jitportal.healthcheck"]
    return subprocess.run(argv, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)


def test_the_health_check_passes_while_the_web_answers_and_fails_when_it_does_not():
    statuses = {"/healthz": 200}

    class Web(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(statuses.get(self.path, 404))
            self.end_headers()
            self.wfile.write(b"ok\n")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Web)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        assert healthcheck(port).returncode == 0
        statuses["/healthz"] = 503
        failed = healthcheck(port)
        assert failed.returncode == 1 and "unhealthy" in failed.stderr
    finally:
        server.shutdown()
        server.server_close()
    refused = healthcheck(port)
    assert refused.returncode == 1 and f"http://127.0.0.1:{port}/healthz" in refused.stderr
