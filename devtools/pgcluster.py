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

Where the server's OS user cannot reach base_dir (a checkout under a mode-700
home, as /root is) or its socket path would be too long, data/, sock/ and
postgres.log go to a fresh folder under /var/tmp instead (jitportal-pg-*,
owned by that user, mode 0700), which cluster.json records so that the next
start reuses it; destroy() (and `stop --remove`) deletes both.

Command line (used by `make run`):

    python -m devtools.pgcluster start DIR [--port N] [--no-demo-roles]
    python -m devtools.pgcluster stop DIR [--remove]
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
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

PG_ROOT = Path("/usr/lib/postgresql")
OS_USER = "postgres"
ADMIN_USER = "jitadmin"
DEMO_DB = "appdb"
# Where the cluster's files go when the server's OS user cannot reach the base dir (not TMPDIR: that may be
# under the same unreachable home). /var/tmp outlives a reboot, so a demo cluster there survives one too.
RUN_ROOT = Path("/var/tmp")

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


def unavailable_reason() -> str | None:
    """Say in one line why no dev cluster can start on this machine, or None if one can."""
    if bin_dir() is None:
        return f"PostgreSQL's server programs are not installed (no {PG_ROOT}/<version>/bin/initdb)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            return f"there is no {OS_USER!r} OS user to run PostgreSQL's server as (it refuses to run as root)"
    return None


def available() -> bool:
    """Tell whether a dev cluster can be started on this machine."""
    return unavailable_reason() is None


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DevClusterError(RuntimeError):
    """Why the cluster cannot do what was asked: `summary` in one line, str() with the programs' output too."""

    def __init__(self, summary: str, details: str = ""):
        super().__init__(summary + (f"\n{details}" if details else ""))
        self.summary = summary


class DevCluster:
    """Start, reuse and stop a local PostgreSQL cluster living in `base_dir`."""

    def __init__(self, base_dir: Path, port: int | None = None):
        self.base_dir = Path(base_dir).resolve()
        self.state_file = self.base_dir / "cluster.json"
        # Where data/, sock/ and postgres.log live: base_dir, or the folder a start() chose and recorded.
        recorded = self._read_state().get("run_dir")
        self.run_dir = Path(recorded) if recorded and self._is_private_run_dir(Path(recorded)) else self.base_dir
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
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.run_dir / "sock"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "postgres.log"

    @property
    def hba_file(self) -> Path:
        return self.data_dir / "pg_hba.conf"

    def dsn(self, dbname: str) -> str:
        """Return the superuser's connection URL for `dbname`."""
        return f"postgresql://{ADMIN_USER}:{quote(self.admin_password, safe='')}@{self.host}:{self.port}/{dbname}"

    def start(self) -> DevCluster:
        """Start the cluster, creating it first if the base dir is new; reuse it if already running."""
        reason = unavailable_reason()
        if reason:
            raise DevClusterError(reason[0].upper() + reason[1:] + ".")
        state = self._read_state()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = self._choose_run_dir(state.get("run_dir"))
        self._prepare_run_dir()

        if state and self.is_running():
            self._port, self._password = state["port"], state["password"]
            return self

        if not (self.data_dir / "PG_VERSION").exists():
            state = {"password": secrets.token_urlsafe(24)}
            self._initdb(state["password"])
        elif not state.get("password"):
            raise DevClusterError(
                f"{self.data_dir} exists but {self.state_file} is missing: cannot know the admin password."
            )

        # Keep the previous port when we can, so exported DSNs stay valid across restarts.
        port = self._requested_port or state.get("port")
        if port is None or not _port_is_free(port):
            if self._requested_port:
                raise DevClusterError(f"Port {port} is in use.")
            port = free_port()
        self._port, self._password = port, state["password"]
        self._write_state()

        result = self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            self.data_dir,
            "-l",
            self.log_file,
            "-o",
            f"-p {port}",
            check=False,
        )
        if result.returncode != 0:
            log = self._log_tail()
            fatal = next((line for line in reversed(log.splitlines()) if "FATAL:" in line), "")
            why = fatal[fatal.find("FATAL:") :] or _first_line(result.stderr)
            raise DevClusterError(
                f"PostgreSQL did not start: {why or 'pg_ctl start failed'} (server log: {self.log_file})",
                f"{result.stdout}{result.stderr}\n{log}",
            )
        return self

    def stop(self) -> None:
        """Stop the cluster (fast shutdown: open sessions are disconnected); keep its files."""
        if self.data_dir.exists() and self.is_running():
            self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", self.data_dir)

    def destroy(self) -> None:
        """Stop the cluster and delete its files: the base dir, and the folder it ran in if elsewhere."""
        self.stop()
        if self.run_dir != self.base_dir and self._is_private_run_dir(self.run_dir):
            shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def is_running(self) -> bool:
        """Tell whether a server is running on this data directory."""
        if bin_dir() is None or not (self.data_dir / "PG_VERSION").exists():
            return False
        # pg_ctl status: 0 running, 3 not running, 4 no accessible data directory.
        return self._run("pg_ctl", "status", "-D", self.data_dir, check=False).returncode == 0

    def setup_demo_roles(self) -> None:
        """Create (idempotently) the demo database, group roles and the orders table."""
        import psycopg  # noqa: PLC0415 (make clean runs this module with the system python3, which may lack psycopg)
        from psycopg import sql  # noqa: PLC0415 (make clean runs this module with the system python3, which may lack psycopg)

        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            for role in ("app_readonly", "app_readwrite", "app_owner"):
                if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
                    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DEMO_DB]).fetchone():
                # CREATE DATABASE cannot run inside a transaction block; autocommit is on.
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEMO_DB)))
            # In the admin database (where the connector reads it) and the demo one; a cluster made before
            # pg_stat_statements was preloaded has no such library loaded: skip it there.
            loaded = "pg_stat_statements" in conn.execute("SHOW shared_preload_libraries").fetchone()[0]
            if loaded:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute(
                sql.SQL(
                    "REVOKE ALL ON DATABASE {db} FROM PUBLIC;"
                    " GRANT CONNECT ON DATABASE {db} TO app_readonly, app_readwrite, app_owner"
                ).format(db=sql.Identifier(DEMO_DB))
            )

        with psycopg.connect(self.dsn(DEMO_DB)) as conn:  # one transaction
            if loaded:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
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
        result = subprocess.run(cmd, cwd=self.run_dir, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise DevClusterError(
                f"{program} failed ({result.returncode}): {_first_line(result.stderr or result.stdout)}",
                f"{shlex.join(cmd)}\n{result.stdout}{result.stderr}",
            )
        return result

    @staticmethod
    def _server_user() -> tuple[int, int] | None:
        """The (uid, gid) the server runs as when it is not the caller (root hands it to postgres), else None."""
        if os.geteuid() != 0:
            return None
        entry = pwd.getpwnam(OS_USER)
        return entry.pw_uid, entry.pw_gid

    def _server_can(self, test: str, path: Path) -> bool:
        """Tell whether the server's OS user passes `test -<test> path` (every folder above it searchable too)."""
        return (
            self._server_user() is None
            or subprocess.run(["runuser", "-u", OS_USER, "--", "test", test, str(path)]).returncode == 0
        )

    def _choose_run_dir(self, recorded: str | None) -> Path:
        """The folder an earlier start recorded, else base_dir where the server can live in it, else a new one."""
        if recorded and self._is_private_run_dir(Path(recorded)):
            return Path(recorded)
        fits = len(str(self.base_dir / "sock" / ".s.PGSQL.65535")) <= _MAX_SOCKET_PATH
        if fits and self._server_can("-x", self.base_dir.parent):
            return self.base_dir
        # mkdtemp: a fresh name, created mode 0700, so nobody can have planted it in the shared folder.
        run_dir = Path(tempfile.mkdtemp(prefix="jitportal-pg-", dir=RUN_ROOT if RUN_ROOT.is_dir() else None))
        if owner := self._server_user():
            os.chown(run_dir, *owner)
        return run_dir

    def _is_private_run_dir(self, path: Path) -> bool:
        """Tell whether `path` is still a real folder that only the server's OS user can enter."""
        try:
            info = path.lstat()
        except OSError:
            return False
        owner = self._server_user()
        uid = owner[0] if owner else os.geteuid()
        return stat.S_ISDIR(info.st_mode) and info.st_uid == uid and not info.st_mode & 0o077

    def _prepare_run_dir(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        owner = self._server_user()
        if owner is None:
            return
        for path in (self.run_dir, self.socket_dir):
            os.chown(path, *owner)
        os.chmod(self.run_dir, 0o700)
        if not self._server_can("-w", self.run_dir):
            raise DevClusterError(f"The {OS_USER!r} OS user cannot write {self.run_dir}.")

    def _initdb(self, password: str) -> None:
        pwfile = self.run_dir / ".pwfile"
        pwfile.write_text(password + "\n")
        try:
            os.chmod(pwfile, 0o600)
            if owner := self._server_user():
                os.chown(pwfile, *owner)
            self._run(
                "initdb",
                "-D",
                self.data_dir,
                "-U",
                ADMIN_USER,
                f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
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
            # What each grant ran, read at revocation (the activity digest).
            "shared_preload_libraries": "'pg_stat_statements'",
        }
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as fh:
            fh.write("\n# jitportal dev cluster\n")
            fh.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _write_state(self) -> None:
        # Created 0600: it holds the superuser password.
        fd = os.open(self.state_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            state = {"port": self._port, "password": self._password}
            if self.run_dir != self.base_dir:
                state["run_dir"] = str(self.run_dir)
            json.dump(state, fh)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


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
    parser = argparse.ArgumentParser(prog="python -m devtools.pgcluster", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start (or reuse) the cluster in DIR and print shell exports")
    start.add_argument("dir", type=Path)
    start.add_argument("--port", type=int)
    start.add_argument("--no-demo-roles", action="store_true", help="skip creating appdb, the app_* roles and orders")
    stop = sub.add_parser("stop", help="stop the cluster in DIR")
    stop.add_argument("dir", type=Path)
    stop.add_argument("--remove", action="store_true", help="also delete DIR (and the folder the cluster ran in)")
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
            cluster.destroy() if args.remove else cluster.stop()
    except DevClusterError as exc:
        print(f"pgcluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
