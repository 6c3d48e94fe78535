"""The throwaway PostgreSQL cluster (devtools/pgcluster.py) starts from any folder, as `make run` needs.

The folders here are under pytest's tmp_path, which is inside /tmp/pytest-of-root (mode 0700): the
`postgres` OS user cannot enter them, just as it cannot enter a checkout in /root.
"""

import os
import pwd
import shutil
import stat
import tempfile
from pathlib import Path

import psycopg
import pytest

from devtools import pgcluster


@pytest.fixture
def as_root():
    if os.geteuid() != 0 or not pgcluster.available():
        pytest.fail("These tests need root and PostgreSQL's server programs (`make system-deps` installs them).")


def _orders(cluster) -> int:
    with psycopg.connect(cluster.dsn(pgcluster.DEMO_DB)) as conn:
        return conn.execute("SELECT count(*) FROM public.orders").fetchone()[0]


def test_a_cluster_in_a_folder_postgres_cannot_reach_runs_elsewhere_is_reused_and_destroyed(tmp_path, as_root):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    base_dir = home / "jitportal" / "var" / "demo-pg"
    cluster = pgcluster.DevCluster(base_dir)
    try:
        cluster.start()
        cluster.setup_demo_roles()
        assert _orders(cluster) == 4

        run_dir = cluster.run_dir
        assert not run_dir.is_relative_to(home)
        info = run_dir.lstat()
        assert (pwd.getpwuid(info.st_uid).pw_name, stat.S_IMODE(info.st_mode)) == (pgcluster.OS_USER, 0o700)
        cluster.stop()

        # The next start (a second `make run`) finds the same cluster, with its data and its password.
        again = pgcluster.DevCluster(base_dir).start()
        assert (again.run_dir, again.admin_password) == (run_dir, cluster.admin_password)
        assert _orders(again) == 4
    finally:
        cluster.destroy()
    assert not run_dir.exists() and not base_dir.exists()


def test_a_damaged_cluster_says_why_in_one_line(tmp_path, as_root):
    cluster = pgcluster.DevCluster(tmp_path / "demo-pg")
    try:
        cluster.start()
        cluster.stop()
        with open(cluster.data_dir / "postgresql.conf", "a") as fh:
            fh.write("no_such_setting = on\n")

        with pytest.raises(pgcluster.DevClusterError) as failed:
            pgcluster.DevCluster(tmp_path / "demo-pg").start()
    finally:
        cluster.destroy()
    assert "\n" not in failed.value.summary
    assert failed.value.summary.startswith("PostgreSQL did not start: FATAL:")
    assert "configuration file" in failed.value.summary and str(cluster.log_file) in failed.value.summary


def test_a_base_dir_too_deep_for_a_unix_socket_still_starts(as_root):
    # Reachable by postgres (unlike tmp_path), so that only the socket path's length is in the way.
    top = Path(tempfile.mkdtemp(prefix="jitportal-deep-"))
    top.chmod(0o755)
    cluster = pgcluster.DevCluster(top / ("d" * 60) / ("e" * 60))
    try:
        cluster.start()
        assert len(str(cluster.socket_dir)) < 100
        with psycopg.connect(cluster.admin_dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        cluster.destroy()
        shutil.rmtree(top, ignore_errors=True)
