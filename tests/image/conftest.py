"""The container image test's fixtures: podman, a Debian-built base, the image, the compose stack, an IdP, a target.

`make test-image` runs this folder; plain `pytest` and `make test` leave it out (pytest.ini) because it
builds images and needs root, podman and a few minutes. What it does, in order:

- `base_image`: a Debian bookworm base made with mmdebstrap (python3, its venv module, the CA certificates
  this machine trusts) and `podman import`ed: no container registry is reachable on the test machines.
  It is kept between runs under a tag naming what went into it, as is the PostgreSQL stand-in built on it.
- `portal_image`: ./Containerfile built on that base (`--build-arg BASE=...`), exactly as a self-hoster
  builds it on the public Python image.
- `idp`: tests/e2e/idp (oidc-provider) on the host, with the e2e accounts; `target`: a throwaway
  PostgreSQL target cluster (devtools.pgcluster) on the host.
- `stack`: compose.yaml with tests/image/compose.test.yaml over it, started with podman-compose: PostgreSQL,
  the migrations, then web, worker and timer; the catalog applied inside the stack. At the end every
  container and volume of the stack is removed, and the logs are in test-artifacts/image/.

podman runs with tests/image/containers.conf (runc, no default ulimits) and host networking, for builds
too: the only combination that works on these machines.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from devtools import pgcluster

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ARTIFACTS = ROOT / "test-artifacts" / "image"
IDP_DIR = ROOT / "tests" / "e2e" / "idp"
CONTAINERS_CONF = HERE / "containers.conf"
PODMAN_COMPOSE = Path(sys.executable).with_name("podman-compose")
PROJECT = "jitportal-image-test"

SUITE = "bookworm"
BASE_PACKAGES = ["python3", "python3-venv", "ca-certificates"]
# The CA certificates this machine trusts beyond Debian's (its egress proxy's, where it has one), so that pip
# in the build reaches PyPI as it does on the host.
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
PORTAL_IMAGE = "localhost/jitportal-image-test:latest"

CLIENT_ID = "jitportal-image-test"
CLIENT_SECRET = "image-test-client-secret-not-secret-0123456789"
PASSWORDS = {"ana": "ana-e2e-pass", "marc": "marc-e2e-pass"}  # tests/e2e/idp/accounts.json
PROFILE_TITLE = "appdb read-only"


def pytest_configure(config):
    config.addinivalue_line("markers", "image: the container image and compose stack (make test-image)")


def podman_env() -> dict:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def run(name: str, argv: list, *, env: dict | None = None, timeout: float = 600, check: bool = True, **kwargs):
    """Run a command to its end, its output in test-artifacts/image/<name>.log; fail with its tail."""
    started = time.monotonic()
    result = subprocess.run(
        [str(a) for a in argv],
        check=False,
        env=env or podman_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )
    took = time.monotonic() - started
    log = ARTIFACTS / f"{name}.log"
    with open(log, "a") as out:
        out.write(
            f"$ {' '.join(map(str, argv))}\n{result.stdout}{result.stderr}[exit {result.returncode} after "
            f"{took:.1f} s]\n"
        )
    if check and result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        pytest.fail(f"{name} failed (exit {result.returncode}), see {log}:\n{tail}", pytrace=False)
    return result


def image_exists(tag: str) -> bool:
    return run("podman-image-exists", ["podman", "image", "exists", tag], check=False).returncode == 0


@pytest.fixture(scope="session")
def artifacts() -> Path:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def tools(artifacts):
    missing = [tool for tool in ("podman", "mmdebstrap") if not shutil.which(tool)]
    missing += [str(p) for p in (Path("/usr/sbin/runc"), PODMAN_COMPOSE) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            f"missing: {', '.join(missing)}. `make test-image` installs them (Debian's podman, mmdebstrap, "
            "runc; podman-compose from requirements-dev.txt).",
            pytrace=False,
        )
    if os.geteuid() != 0:
        pytest.fail("the image test runs podman and mmdebstrap as root (as `make test-image` does).", pytrace=False)
    run("podman-version", ["podman", "version"])


def _base_digest() -> str:
    """A digest of what goes into the base image: when it changes, a new base is made."""
    parts = [SUITE, *BASE_PACKAGES]
    if LOCAL_CA_DIR.is_dir():
        parts += [p.read_text(errors="replace") for p in sorted(LOCAL_CA_DIR.rglob("*.crt"))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


@pytest.fixture(scope="session")
def base_image(tools) -> str:
    """Debian bookworm (minbase) with python3: the BASE the Containerfile is built on here."""
    tag = f"localhost/jitportal-test-base:{SUITE}-{_base_digest()}"
    if image_exists(tag):
        return tag
    workdir = Path(tempfile.mkdtemp(prefix="jitportal-base-"))
    try:
        tarball = workdir / "base.tar"
        hooks = []
        if LOCAL_CA_DIR.is_dir():
            hooks = [
                f"--customize-hook=copy-in {LOCAL_CA_DIR} /usr/local/share/",
                '--customize-hook=chroot "$1" update-ca-certificates',
            ]
        run(
            "mmdebstrap",
            ["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", *hooks, SUITE, tarball],
            timeout=900,
        )
        run("podman-import", ["podman", "import", tarball, tag])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return tag


@pytest.fixture(scope="session")
def postgres_image(base_image) -> str:
    """The stand-in for compose.yaml's PostgreSQL image: Debian's postgresql-15 on the same base."""
    tag = f"localhost/jitportal-test-postgres:{base_image.rsplit(':', 1)[1]}"
    run(
        "build-postgres",
        ["podman", "build", "--network", "host", "--build-arg", f"BASE={base_image}", "-t", tag, HERE / "postgres"],
        timeout=900,
    )
    return tag


@pytest.fixture(scope="session")
def portal_image(base_image) -> str:
    """./Containerfile built on the local base (its layers cached by podman between runs)."""
    before = run("portal-image-id", ["podman", "image", "inspect", "--format", "{{.Id}}", PORTAL_IMAGE], check=False)
    run(
        "build-portal",
        [
            "podman",
            "build",
            "--format",
            "docker",
            "--network",
            "host",
            "--build-arg",
            f"BASE={base_image}",
            "-t",
            PORTAL_IMAGE,
            "-f",
            ROOT / "Containerfile",
            ROOT,
        ],
        timeout=1200,
    )
    old = before.stdout.strip() if before.returncode == 0 else ""
    after = run("portal-image-id", ["podman", "image", "inspect", "--format", "{{.Id}}", PORTAL_IMAGE]).stdout.strip()
    if old and old != after:
        # The previous run's image, now untagged; the layers the new one shares stay.
        run("portal-image-old", ["podman", "rmi", old], check=False)
    return PORTAL_IMAGE


@pytest.fixture(scope="session")
def ports() -> dict:
    return {"web": pgcluster.free_port(), "db": pgcluster.free_port()}


@dataclass
class Idp:
    issuer: str


@pytest.fixture(scope="session")
def idp(artifacts, ports):
    """The e2e suite's OpenID Connect provider on the host, its one client registered for the stack's web."""
    node = shutil.which("node") or pytest.fail(
        "node is missing: the test IdP runs on Node.js (make e2e-deps).", pytrace=False
    )
    if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
        run(
            "idp-npm-ci",
            [shutil.which("npm") or "npm", "ci", "--no-audit", "--no-fund"],
            cwd=IDP_DIR,
            env=dict(os.environ),
        )
    log_path = ARTIFACTS / "idp.log"
    portal = f"http://127.0.0.1:{ports['web']}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                node,
                "server.mjs",
                "--port",
                "0",
                "--client-id",
                CLIENT_ID,
                "--client-secret",
                CLIENT_SECRET,
                "--redirect-uri",
                f"{portal}/accounts/oidc/idp/login/callback/",
                "--post-logout-redirect-uri",
                f"{portal}/accounts/login/",
            ],
            cwd=IDP_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
    try:
        deadline, issuer = time.monotonic() + 30, None
        while issuer is None:
            match = re.search(r"IdP ready on (http://\S+)", log_path.read_text(errors="replace"))
            issuer = match and match.group(1)
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"the test IdP did not start:\n{log_path.read_text(errors='replace')[-2000:]}", pytrace=False
                )
            time.sleep(0.05)
        yield Idp(issuer)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="session")
def target():
    """A throwaway PostgreSQL target on the host (appdb, app_readonly), reached by the containers on 127.0.0.1."""
    if not pgcluster.available():
        pytest.fail(
            "PostgreSQL server programs are missing under /usr/lib/postgresql: `make system-deps` installs them.",
            pytrace=False,
        )
    # Not under /tmp/pytest-of-root (0700): the server runs as the postgres OS user.
    base_dir = Path(tempfile.mkdtemp(prefix="jitportal-image-pg-"))
    cluster = pgcluster.DevCluster(base_dir)
    try:
        cluster.start()
        cluster.setup_demo_roles()
        yield cluster
    finally:
        cluster.destroy()  # its files too, wherever they went


class Stack:
    """The compose project: podman-compose with compose.yaml and the test's override."""

    def __init__(self, env: dict, workdir: Path):
        self.env, self.workdir = env, workdir
        self.url = f"http://127.0.0.1:{env['IMAGE_TEST_WEB_PORT']}"

    def compose(self, name: str, *args, **kwargs):
        argv = [
            PODMAN_COMPOSE,
            "--project-name",
            PROJECT,
            "-f",
            ROOT / "compose.yaml",
            "-f",
            HERE / "compose.test.yaml",
            *args,
        ]
        return run(name, argv, env=self.env, cwd=ROOT, **kwargs)

    def container(self, service: str) -> str:
        """The name of the service's container."""
        result = run(
            "podman-ps",
            [
                "podman",
                "ps",
                "-a",
                "--format",
                "{{.Names}}",
                "--filter",
                f"label=io.podman.compose.project={PROJECT}",
                "--filter",
                f"label=io.podman.compose.service={service}",
            ],
        )
        names = result.stdout.split()
        assert len(names) == 1, f"{service}: containers {names}"
        return names[0]

    def containers(self) -> list[str]:
        result = run(
            "podman-ps",
            ["podman", "ps", "-a", "--format", "{{.Names}}", "--filter", f"label=io.podman.compose.project={PROJECT}"],
        )
        return result.stdout.split()

    def logs(self, service: str) -> str:
        result = run("podman-logs", ["podman", "logs", self.container(service)], check=False)
        return result.stdout + result.stderr

    def exec(self, name: str, service: str, *argv, **kwargs):
        return run(name, ["podman", "exec", self.container(service), *argv], **kwargs)

    def secret(self, name: str) -> str:
        return (Path(self.env["IMAGE_TEST_SECRETS"]) / name).read_text().strip()

    def portal_dsn(self) -> dict:
        """How the portal's processes log in to the stack's PostgreSQL (its role, its password secret)."""
        return {
            "host": "127.0.0.1",
            "port": int(self.env["IMAGE_TEST_DB_PORT"]),
            "dbname": "jitportal",
            "user": "jitportal_app",
            "password": self.secret("db_password"),
        }

    def production_env(self, service: str) -> list[str]:
        """`env` arguments putting back compose.yaml's own values of what compose.test.yaml changes for the test.

        The test reaches the web over plain HTTP on a loopback port; in production the same variables are
        compose.yaml's (HTTPS behind a proxy). The database address stays the test's: the real one.
        """
        compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"][service]["environment"]
        changed = yaml.safe_load((HERE / "compose.test.yaml").read_text())["x-test-portal"]["environment"]
        argv = []
        for name in sorted(set(changed) - {"DATABASE_URL"}):
            if name in compose:
                argv.append(f"{name}={_interpolate(str(compose[name]), self.env)}")
            else:
                argv[:0] = ["-u", name]
        return argv


def _interpolate(value: str, env: dict) -> str:
    """compose's ${NAME}, ${NAME:-default} and ${NAME:?message}, from the environment compose runs with."""

    def one(match):
        name, op, arg = match.groups()
        found = env.get(name, "")
        return arg if op in (":-", "-") and not found else found

    return re.sub(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}", one, value)


def _wait(what: str, predicate, timeout: float = 90, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout:.0f} s (see {ARTIFACTS})", pytrace=False)
        time.sleep(every)


def _catalog(target) -> dict:
    """The operator's catalog for the test: the target cluster and one profile engineers may request."""
    return {
        "targets": {
            "pg-prod": {
                "title": "Image test PostgreSQL (appdb)",
                "kind": "postgres",
                "config": {"host": target.host, "port": target.port, "dbname": "appdb"},
                # compose.yaml's example target secret: PG_PROD_ADMIN_DSN_FILE=/run/secrets/pg_prod_admin_dsn
                "secret_env": "PG_PROD_ADMIN_DSN",
            }
        },
        "profiles": {
            "appdb-readonly": {
                "title": PROFILE_TITLE,
                "target": "pg-prod",
                "scope": {"roles": ["app_readonly"]},
                "default_duration": "1h",
                "max_duration": "4h",
                "requestable_by": ["engineers"],
                "approvers": {"group": "db-approvers"},
            }
        },
    }


@pytest.fixture(scope="session")
def stack(portal_image, postgres_image, idp, target, ports):
    workdir = Path(tempfile.mkdtemp(prefix="jitportal-image-test-"))
    secrets_dir = workdir / "secrets"
    # The directory keeps the host's other users out; the files are readable by the containers' users (the
    # portal's uid 10001, PostgreSQL's), to whom compose hands them as bind mounts under /run/secrets/.
    secrets_dir.mkdir(mode=0o700)
    owner_password = secrets.token_hex(24)
    for name, value in {
        # compose.yaml's two database roles: the tables' owner (db, migrate) and the portal's (web, worker, timer).
        "db_owner_password": owner_password,
        "migrate_database_url": f"postgres://jitportal:{owner_password}@127.0.0.1:{ports['db']}/jitportal",
        "db_password": secrets.token_hex(24),
        "audit_signing_key": _ed25519_pem(),
        "secret_key": secrets.token_urlsafe(48),
        "oidc_client_secret": CLIENT_SECRET,
        "pg_prod_admin_dsn": target.admin_dsn,
    }.items():
        (secrets_dir / name).write_text(value + "\n")
        (secrets_dir / name).chmod(0o644)
    catalog = workdir / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(_catalog(target), sort_keys=False))
    catalog.chmod(0o644)
    workdir.chmod(0o755)
    env = {
        **podman_env(),
        "JITPORTAL_IMAGE": portal_image,
        "IMAGE_TEST_POSTGRES_IMAGE": postgres_image,
        "IMAGE_TEST_WEB_PORT": str(ports["web"]),
        "IMAGE_TEST_DB_PORT": str(ports["db"]),
        "IMAGE_TEST_SECRETS": str(secrets_dir),
        # What an operator puts in .env beside compose.yaml.
        "JITPORTAL_HOST": "127.0.0.1",
        "OIDC_ISSUER": idp.issuer,
        "OIDC_CLIENT_ID": CLIENT_ID,
    }
    stack = Stack(env, workdir)
    try:
        # What a run that was killed may have left behind.
        stack.compose("compose-down-leftovers", "down", "--volumes", "--timeout", "10", check=False, timeout=300)
        # compose.yaml's order by hand: podman 4.3 cannot wait for a health check (podman-compose skips
        # `service_healthy` below podman 4.6) and fails to start a container whose dependencies have
        # dependencies ("not found in input list"), so each step is started alone (--no-deps) once the one
        # before is done. README "With containers" tells podman 4.3 users the same.
        stack.compose("compose-up-db", "up", "-d", "db")
        db = stack.container("db")
        _wait(
            "PostgreSQL's health check",
            lambda: run("db-health", ["podman", "healthcheck", "run", db], check=False).returncode == 0,
        )
        stack.compose("compose-up-migrate", "up", "-d", "--no-deps", "migrate")
        migrate = stack.container("migrate")
        exit_code = run("migrate-wait", ["podman", "wait", migrate], timeout=300).stdout.strip()
        assert exit_code == "0", f"migrate exited with {exit_code}:\n{stack.logs('migrate')[-3000:]}"
        stack.compose("compose-up", "up", "-d", "--no-deps", "web", "worker", "timer")
        _wait("the web's /healthz", lambda: _answers(stack.url + "/healthz"))
        apply = ["python", "manage.py", "catalog", "apply", "/catalog/catalog.yaml"]
        stack.compose(
            "catalog-apply", "run", "--rm", "--no-deps", "-v", f"{catalog}:/catalog/catalog.yaml:ro", "web", *apply
        )
        yield stack
    finally:
        try:
            for name in stack.containers():
                result = run("podman-logs", ["podman", "logs", name], check=False)
                (ARTIFACTS / f"container-{name}.log").write_text(result.stdout + result.stderr)
        finally:
            stack.compose("compose-down", "down", "--volumes", "--timeout", "30", check=False, timeout=300)
            left = stack.containers()
            for name in left:
                run("podman-rm", ["podman", "rm", "--force", name], check=False)
            volumes = run(
                "podman-volumes",
                [
                    "podman",
                    "volume",
                    "ls",
                    "--format",
                    "{{.Name}}",
                    "--filter",
                    f"label=io.podman.compose.project={PROJECT}",
                ],
                check=False,
            )
            for name in volumes.stdout.split():
                run("podman-volume-rm", ["podman", "volume", "rm", "--force", name], check=False)
            shutil.rmtree(workdir, ignore_errors=True)
            assert not left, f"compose down left containers behind: {left}"


def _ed25519_pem() -> str:
    """What `openssl genpkey -algorithm ed25519` writes (README "With containers")."""
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode().strip()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=3).status_code == 200
    except requests.RequestException:
        return False


def image_config(tag: str) -> dict:
    result = run("image-inspect", ["podman", "image", "inspect", tag])
    return json.loads(result.stdout)[0]
