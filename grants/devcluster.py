"""A throwaway PostgreSQL target cluster for tests, the demo and benchmarks.

This is the *target* the portal hands out access to, not the portal's own
database. It runs the distribution's server binaries from
/usr/lib/postgresql/<version>/bin as the `postgres` OS user (initdb and
postgres refuse to run as root), listens on 127.0.0.1 only, and keeps
everything (data, socket, log, state) inside one base directory:

    base_dir/
        data/           the cluster (owned by postgres, mode 0700)
        sock/           the unix socket directory
        postgres.log    server log
        cluster.json    port and admin password, so a second start() reuses it

Command line (used by `make run`):

    python -m grants.devcluster start DIR [--port N] [--no-demo-roles]
    python -m grants.devcluster stop DIR
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

PG_ROOT = Path("/usr/lib/postgresql")
OS_USER = "postgres"
ADMIN_USER = "jitadmin"
DEMO_DB = "appdb"

# Unix socket paths are limited to 107 bytes (sun_path) on Linux.
_MAX_SOCKET_PATH = 107


def bin_dir() -> Path | None:
    """Return the bin directory of the newest installed PostgreSQL, or None."""
    versions = []
    if PG_ROOT.is_dir():
        for entry in PG_ROOT.iterdir():
            if (entry / "bin" / "initdb").exists() and entry.name.replace(".", "").isdigit():
                versions.append((tuple(int(p) for p in entry.name.split(".")), entry / "bin"))
    return max(versions)[1] if versions else None


def available() -> bool:
    """Tell whether a dev cluster can be started on this machine."""
    if bin_dir() is None:
        return False
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            return False
    return True


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DevClusterError(RuntimeError):
    pass


class DevCluster:
    """Start, reuse and stop a local PostgreSQL cluster living in `base_dir`."""

    def __init__(self, base_dir: Path, port: int | None = None):
        self.base_dir = Path(base_dir).resolve()
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_file = self.base_dir / "postgres.log"
        self.state_file = self.base_dir / "cluster.json"
        self._requested_port = port
        self._port: int | None = None
        self._password: str | None = None

    # -- public API ---------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        if self._port is None:
            raise DevClusterError("The cluster is not started.")
        return self._port

    @property
    def admin_password(self) -> str:
        if self._password is None:
            raise DevClusterError("The cluster is not started.")
        return self._password

    @property
    def admin_dsn(self) -> str:
        return self.dsn("postgres")

    @property
    def hba_file(self) -> Path:
        return self.data_dir / "pg_hba.conf"

    def dsn(self, dbname: str) -> str:
        """Return the superuser's connection URL for `dbname`."""
        return f"postgresql://{ADMIN_USER}:{quote(self.admin_password, safe='')}@{self.host}:{self.port}/{dbname}"

    def start(self) -> DevCluster:
        """Start the cluster, creating it first if the base dir is new; reuse it if already running."""
        if not available():
            raise DevClusterError(f"No PostgreSQL server binaries under {PG_ROOT} (or no {OS_USER!r} OS user).")
        self._check_socket_path()
        self._prepare_base_dir()
        state = self._read_state()

        if state and self.is_running():
            self._port, self._password = state["port"], state["password"]
            return self

        if not (self.data_dir / "PG_VERSION").exists():
            state = {"password": secrets.token_urlsafe(24)}
            self._initdb(state["password"])
        elif not state:
            raise DevClusterError(f"{self.data_dir} exists but {self.state_file} is missing: cannot know the admin password.")

        # Keep the previous port when we can, so exported DSNs stay valid across restarts.
        port = self._requested_port or state.get("port")
        if port is None or not _port_is_free(port):
            if self._requested_port:
                raise DevClusterError(f"Port {port} is in use.")
            port = free_port()
        self._port, self._password = port, state["password"]
        self._write_state()

        result = self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", self.data_dir, "-l", self.log_file, "-o", f"-p {port}",
            check=False,
        )
        if result.returncode != 0:
            raise DevClusterError(f"pg_ctl start failed:\n{result.stdout}{result.stderr}\n{self._log_tail()}")
        return self

    def stop(self) -> None:
        """Stop the cluster (fast shutdown: open sessions are disconnected); keep its files."""
        if self.data_dir.exists() and self.is_running():
            self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", self.data_dir)

    def is_running(self) -> bool:
        """Tell whether a server is running on this data directory."""
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        # pg_ctl status: 0 running, 3 not running, 4 no accessible data directory.
        return self._run("pg_ctl", "status", "-D", self.data_dir, check=False).returncode == 0

    def setup_demo_roles(self) -> None:
        """Create (idempotently) the demo database, group roles and the orders table."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            for role in ("app_readonly", "app_readwrite", "app_owner"):
                if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
                    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DEMO_DB]).fetchone():
                # CREATE DATABASE cannot run inside a transaction block; autocommit is on.
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEMO_DB)))
            conn.execute(
                sql.SQL(
                    "REVOKE ALL ON DATABASE {db} FROM PUBLIC;"
                    " GRANT CONNECT ON DATABASE {db} TO app_readonly, app_readwrite, app_owner"
                ).format(db=sql.Identifier(DEMO_DB))
            )

        with psycopg.connect(self.dsn(DEMO_DB)) as conn:  # one transaction
            conn.execute(
                """
                GRANT USAGE ON SCHEMA public TO app_readonly;
                GRANT USAGE, CREATE ON SCHEMA public TO app_readwrite;
                GRANT app_readonly TO app_readwrite;
                CREATE TABLE IF NOT EXISTS public.orders (
                    id serial PRIMARY KEY,
                    customer text NOT NULL,
                    amount numeric(10, 2) NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now()
                );
                ALTER TABLE public.orders OWNER TO app_owner;
                GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_readonly;
                ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public GRANT SELECT ON TABLES TO app_readonly;
                ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO app_readonly;
                """
            )
            if not conn.execute("SELECT 1 FROM public.orders LIMIT 1").fetchone():
                conn.execute(
                    "INSERT INTO public.orders (customer, amount) VALUES"
                    " ('ACME Corp', 129.90), ('Globex', 45.00), ('Initech', 310.25), ('Umbrella', 12.50)"
                )

    def __enter__(self) -> DevCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------

    def _run(self, program: str, *args, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(bin_dir() / program), *map(str, args)]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", OS_USER, "--", *cmd]
        # cwd: the postgres user may not be able to enter the caller's working directory.
        result = subprocess.run(cmd, cwd=self.base_dir, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise DevClusterError(f"{shlex.join(cmd)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def _prepare_base_dir(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if os.geteuid() != 0:
            return
        entry = pwd.getpwnam(OS_USER)
        for path in (self.base_dir, self.socket_dir):
            os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(self.base_dir, 0o700)
        # A parent directory the postgres user cannot traverse (pytest's
        # /tmp/pytest-of-root is 0700) makes initdb fail with a confusing message.
        if subprocess.run(["runuser", "-u", OS_USER, "--", "test", "-w", str(self.base_dir)]).returncode != 0:
            raise DevClusterError(f"The {OS_USER!r} OS user cannot write {self.base_dir}; choose a base dir it can reach.")

    def _check_socket_path(self) -> None:
        if len(str(self.socket_dir / ".s.PGSQL.65535")) > _MAX_SOCKET_PATH:
            raise DevClusterError(f"Base dir path too long for a unix socket: {self.base_dir}")

    def _initdb(self, password: str) -> None:
        pwfile = self.base_dir / ".pwfile"
        pwfile.write_text(password + "\n")
        try:
            os.chmod(pwfile, 0o600)
            if os.geteuid() == 0:
                entry = pwd.getpwnam(OS_USER)
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            self._run(
                "initdb", "-D", self.data_dir, "-U", ADMIN_USER, f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
                "--encoding=UTF8", "--no-locale", "--no-sync",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": "'" + str(self.socket_dir).replace("'", "''") + "'",
            # Throwaway data: durability is not worth the time.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            # Benchmarks open many sessions at once.
            "max_connections": "300",
            "password_encryption": "'scram-sha-256'",
        }
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as fh:
            fh.write("\n# jitportal dev cluster\n")
            fh.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}

    def _write_state(self) -> None:
        # Created 0600: it holds the superuser password.
        fd = os.open(self.state_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"port": self._port, "password": self._password}, fh)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As PostgreSQL binds: a port whose last connections linger in TIME_WAIT
        # after a stop is free to listen on again.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the `start` / `stop` command line."""
    parser = argparse.ArgumentParser(prog="python -m grants.devcluster", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start (or reuse) the cluster in DIR and print shell exports")
    start.add_argument("dir", type=Path)
    start.add_argument("--port", type=int)
    start.add_argument("--no-demo-roles", action="store_true", help="skip creating appdb, the app_* roles and orders")
    stop = sub.add_parser("stop", help="stop the cluster in DIR")
    stop.add_argument("dir", type=Path)
    stop.add_argument("--remove", action="store_true", help="also delete DIR")
    args = parser.parse_args(argv)

    cluster = DevCluster(args.dir, port=getattr(args, "port", None))
    try:
        if args.command == "start":
            cluster.start()
            if not args.no_demo_roles:
                cluster.setup_demo_roles()
            print(f"export JIT_DEMO_PG_DSN={shlex.quote(cluster.admin_dsn)}")
            print(f"export JIT_DEMO_PG_HOST={cluster.host}")
            print(f"export JIT_DEMO_PG_PORT={cluster.port}")
        else:
            cluster.stop()
            if args.remove:
                shutil.rmtree(cluster.base_dir, ignore_errors=True)
    except DevClusterError as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
