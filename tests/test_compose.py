"""compose.yaml's structure, checked without podman (`make test-image` runs it for real)."""

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
        files = {value for key, value in service["environment"].items() if key.endswith("_FILE")}
        assert files and files <= mounted, (name, files - mounted)
        for key in service["environment"]:
            assert not key.endswith(("SECRET", "PASSWORD", "SECRET_KEY", "DSN")), (name, key)
        # The password comes from DATABASE_PASSWORD_FILE (the portal) or POSTGRES_PASSWORD_FILE (PostgreSQL).
        assert urlsplit(service["environment"].get("DATABASE_URL", "postgres://db")).password is None
