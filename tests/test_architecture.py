"""Dependencies point one way: audit's log <- accounts <- grants <- audit's report pages <- jitportal."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = {"audit", "accounts", "grants", "jitportal"}
# The log is everything in audit except its report pages.
AUDIT_REPORT_MODULES = {"views.py", "tables.py", "filters.py", "urls.py", "reports.py"}


def imported_apps(path: Path) -> set[str]:
    """Return the modules of our apps that `path` imports, e.g. {'grants.selectors'}."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in APPS}
    return found


def sources(app):
    return [p for p in (ROOT / app).rglob("*.py") if "tests" not in p.parts and "migrations" not in p.parts]


def edges_violating():
    bad = []
    for app in ("audit", "accounts", "grants"):
        for path in sources(app):
            for module in sorted(imported_apps(path)):
                other = module.split(".")[0]
                if other == app:
                    continue
                rel = path.relative_to(ROOT).as_posix()
                if app == "audit" and path.name in AUDIT_REPORT_MODULES:
                    ok = module.startswith("grants.selectors") or other == "accounts"
                elif app == "audit":
                    ok = False  # the log imports none of our apps
                elif app == "accounts":
                    ok = other == "audit"
                else:  # grants
                    ok = other in {"audit", "accounts"}
                if not ok:
                    bad.append(f"{rel} imports {module}")
    return bad


def test_apps_import_only_downwards():
    assert edges_violating() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "log.py").write_text("from grants.models import Grant\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert edges_violating() == ["audit/log.py imports grants.models", "audit/log.py imports grants.models.Grant"]
