"""The reports benchmark still runs: a small fill, every measure, the table it prints (no timing is asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent


def test_reports_benchmark_fills_a_verifiable_trail_and_measures_every_page(tmp_path):
    # The benchmark needs PostgreSQL; `make test` sets DATABASE_URL to it (the benchmark says so otherwise).
    name = (urlsplit(os.environ.get("DATABASE_URL", "")).path.lstrip("/") or "jitportal") + "_reports_smoke"
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/reports.py", "--grants", "1500", "--repeat", "1", "--db-name", name, "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    # The fill: as many grants as asked, one request in twenty not granted, six events per finished grant, a chain that verifies.
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
