"""`make run` and the tests that hand files to other OS users, from a checkout under a mode-700 folder.

A root user's clone in /root (mode 0700) is out of reach of every other OS user: the `postgres` user the
demo's target cluster runs as, and the SSH tests' login user, who runs the session guard. Each test here
copies this checkout (its working tree: tracked and new files) into such a folder and runs from there.
`make run` runs with PY= this interpreter, so that it needs no second virtualenv.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from devtools import pgcluster
from jitportal import run
from tests.image.browser import Person

pytestmark = pytest.mark.whatever_the_database(
    "`make run` in a checkout runs on its own SQLite file; the connector tests it runs there are not the SQLite pass's"
)

BASE = Path(__file__).resolve().parents[1]
# What a fresh clone does not have (and a copy need not take).
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "var", "node_modules", "test-artifacts", "__pycache__", ".pytest_cache"
)


def copy_checkout(dest: Path) -> Path:
    """Copy the working tree to `dest`: what `git ls-files` names (tracked and untracked), else all but NOT_COPIED."""
    listed = subprocess.run(
        ["git", "-C", str(BASE), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=False,
    )  # fmt: skip
    if listed.returncode != 0:
        shutil.copytree(BASE, dest, ignore=NOT_COPIED, symlinks=True)
        return dest
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = BASE / name
        if source.is_file() or source.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name, follow_symlinks=False)
    return dest


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A copy of this checkout in a mode-700 home, as a root user's clone in /root; its demo cluster removed after.

    One for the module: a second `make run` in it skips the first one's migrations and initdb.
    """
    home = tmp_path_factory.mktemp("home")
    home.chmod(0o700)
    clone = copy_checkout(home / "jitportal")
    # make's `run` needs its venv stamp newer than the requirements; PY= points at this interpreter.
    (clone / ".venv").mkdir()
    (clone / ".venv" / ".installed").touch()
    yield clone
    pgcluster.DevCluster(clone / "var" / "demo-pg").destroy()


class Demo:
    """`make run` in a checkout, stopped with Ctrl-C (SIGINT to its process group) as a person would."""

    def __init__(self, checkout: Path):
        self.port = pgcluster.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = checkout / "make-run.log"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DATABASE_URL", "MIGRATE_DATABASE_URL", "JIT_", "MAKE", "MFLAGS"))
        }
        env["JITPORTAL_PORT"] = str(self.port)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                ["make", "--no-print-directory", "run", f"PY={sys.executable}"],
                cwd=checkout, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until_serving(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"make run exited ({self.proc.returncode}):\n{self.output()}")
            if "Ctrl-C stops" in self.output():
                try:
                    # Long enough that the request is answered, not dropped (gunicorn would log the broken pipe).
                    if requests.get(self.url + "/healthz", timeout=90).status_code == 200:
                        return
                except (requests.ConnectionError, requests.Timeout):
                    pass  # gunicorn's master listens before a worker has booted and answers
            time.sleep(0.3)
        raise AssertionError(f"make run did not serve {self.url} within {timeout} s:\n{self.output()}")

    def ctrl_c(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"make run did not stop on Ctrl-C:\n{self.output()}") from None


def demo_target_row(demo: Demo) -> str:
    """Sign in as the demo admin and return the Targets page's row for the demo PostgreSQL target."""
    admin = Person(demo.url, "admin", "admin-demo-pass")
    signed_in = admin.submit(
        admin.get("/accounts/login/"), r"^/accounts/login/$", login="admin", password="admin-demo-pass"
    )
    assert urlsplit(signed_in.url).path.startswith("/access/"), signed_in.text[:2000]
    page = admin.get("/access/targets/")
    rows = [row for row in re.findall(r"<tr>.*?</tr>", page.text, re.S) if "<small>demo-postgres</small>" in row]
    assert len(rows) == 1, page.text[:3000]
    return rows[0]


def test_make_run_in_a_mode_700_checkout_serves_the_portal_with_its_demo_target_reachable(checkout):
    demo = Demo(checkout)
    try:
        demo.wait_until_serving()
        row = demo_target_row(demo)
    finally:
        demo.ctrl_c()
    output = demo.output()
    # The start, up to the banner, has no traceback. (What gunicorn logs afterwards of a request the Ctrl-C cut
    # short is about the stop, not the start.)
    started = output.split("Ctrl-C stops", 1)[0]
    assert "Traceback" not in started and "DevClusterError" not in output
    assert "Demo target: PostgreSQL on 127.0.0.1:" in output and "where the postgres user can reach it" in output
    assert ">Reachable</span>" in row, row
    assert "jitportal stopped." in output
    cluster = pgcluster.DevCluster(checkout / "var" / "demo-pg")
    assert not cluster.run_dir.is_relative_to(checkout) and not cluster.is_running()


def test_make_run_whose_demo_cluster_cannot_start_still_serves_and_says_why_in_one_line(checkout):
    # A cluster left by an earlier `make run` whose configuration no longer loads.
    cluster = pgcluster.DevCluster(checkout / "var" / "demo-pg").start()
    cluster.stop()
    conf = cluster.data_dir / "postgresql.conf"
    intact = conf.read_text()
    conf.write_text(intact + "no_such_setting = on\n")

    demo = Demo(checkout)
    try:
        demo.wait_until_serving()
        row = demo_target_row(demo)
    finally:
        demo.ctrl_c()
        conf.write_text(intact)
    output = demo.output()
    # As above: the start has no traceback. (Under load gunicorn's worker may still be writing a response when
    # the Ctrl-C reaches it, and logs that request's end: that is the stop, not the start this test is about.)
    assert "Traceback" not in output.split("Ctrl-C stops", 1)[0]
    why = [line for line in output.splitlines() if "Demo target" in line]
    assert len(why) == 1 and why[0].startswith(
        "Demo target unreachable (its grants fail): PostgreSQL did not start: FATAL:"
    ), why
    assert ">Unreachable</span>" in row, row


def test_the_pgcluster_and_ssh_guard_tests_pass_in_a_mode_700_checkout(checkout, tmp_path):
    # Just as `make test` there would run them: grants/tests/connectors/sshd_support.py installs the guard.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    if env.get("DATABASE_URL"):
        # Its own portal database (pytest-django makes test_<name>), not the one this run is using.
        url = urlsplit(env["DATABASE_URL"])
        env["DATABASE_URL"] = urlunsplit(url._replace(path=url.path.rstrip("/") + "_copy"))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'inner'}",
         "devtools/tests/test_pgcluster.py", "grants/tests/connectors/test_ssh.py", "contrib/ssh-session-guard/tests"],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", done.stdout), done.stdout[-2000:]


def test_without_postgresqls_programs_make_run_says_so_in_one_line(tmp_path, monkeypatch):
    # Every machine that runs this suite has PostgreSQL's programs (it needs them): the one stand-in here is
    # an empty folder where the helper looks for them.
    monkeypatch.setattr(pgcluster, "PG_ROOT", tmp_path)

    cluster, note = run.start_demo_target(tmp_path / "var")

    assert cluster is None
    assert note == (
        "Demo target unreachable (its grants fail):"
        f" PostgreSQL's server programs are not installed (no {tmp_path}/<version>/bin/initdb)."
    )
