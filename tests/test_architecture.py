"""Dependencies point one way: audit's log <- accounts <- grants <- the edges (reports) <- jitportal.

A dependency is an `import` statement or a dotted name in a string (a task
name given to `async_task`, `schedule`, `_enqueue` or a `Schedule.func`, a
setting, a registry entry): code that enqueues "grants.notify.x" depends on
grants.notify as surely as code that imports it. Migrations count too.
An edge reads the core through the modules EDGE_READS names, and never
writes a row itself (it would skip the lifecycle's locks and audit events).
"""

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = {"audit", "accounts", "grants", "reports", "jitportal"}

# What each edge may use of the core, besides `audit` and `accounts`: reads, rules, announcements and model types.
EDGE_READS = {
    "reports": ("grants.selectors", "grants.policy", "grants.models", "grants.events"),
}

# Strings that look like dotted paths but name no code: not dependencies, nothing to resolve.
NOT_CODE = {
    "jitportal.audit.head": "a logger name (audit/log.py)",
    "jitportal.middleware.forget_request_id": "a signal dispatch_uid (jitportal/middleware.py)",
}

# Calls whose first argument, and keyword/dict key whose value, is a task's dotted name.
TASK_CALLS = {"async_task", "schedule", "_enqueue"}
TASK_KEYS = {"func"}


def _dotted(value) -> bool:
    """A dotted path into our code: app.module.attribute at least (one dot is a model label or permission)."""
    if not isinstance(value, str) or value in NOT_CODE:
        return False
    parts = value.split(".")
    return len(parts) >= 3 and parts[0] in APPS and all(p.isidentifier() for p in parts)


def _tree(path: Path) -> ast.AST:
    return ast.parse(path.read_text(), filename=str(path))


def dotted_names(tree: ast.AST) -> list[ast.Constant]:
    """Return the string literals of `tree` that are dotted paths into our code."""
    return [node for node in ast.walk(tree) if isinstance(node, ast.Constant) and _dotted(node.value)]


def imported_apps(path: Path) -> set[str]:
    """Return the modules of our apps that `path` depends on, by import or dotted name, e.g. {'grants.selectors'}."""
    tree = _tree(path)
    found = {node.value.rsplit(".", 1)[0] for node in dotted_names(tree)}  # the module a dotted name lives in
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in APPS}
    return found


def task_names(path: Path) -> set[str]:
    """Return the dotted task names `path` enqueues or schedules (a literal, or a module constant it passes)."""
    tree = _tree(path)
    constants = {
        target.id: node.value.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }

    def value(node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return constants.get(node.id)
        return None

    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in TASK_CALLS and node.args:
                found.add(value(node.args[0]))
            found |= {value(k.value) for k in node.keywords if k.arg in TASK_KEYS}
        elif isinstance(node, ast.Dict):
            found |= {value(v) for k, v in zip(node.keys, node.values, strict=True) if value(k) in TASK_KEYS}
    if "migrations" in path.parts:
        # A migration's dotted names are the Schedule.func values it writes, however it passes them on.
        found |= {node.value for node in dotted_names(tree)}
    return {name for name in found if isinstance(name, str)}


def sources(app, *, migrations=True):
    return [
        p for p in (ROOT / app).rglob("*.py")
        if "tests" not in p.parts and (migrations or "migrations" not in p.parts)
    ]  # fmt: skip


def edges_violating():
    bad = []
    for app in ("audit", "accounts", "grants", *EDGE_READS):
        for path in sources(app):
            for module in sorted(imported_apps(path)):
                other = module.split(".")[0]
                if other == app:
                    continue
                rel = path.relative_to(ROOT).as_posix()
                if app == "audit":
                    ok = False  # the log imports none of our apps
                elif app == "accounts":
                    ok = other == "audit"
                elif app == "grants":
                    ok = other in {"audit", "accounts"}
                else:  # an edge: never another edge, grants only through its reads
                    # `from grants import selectors` names the package too: the module after it is what counts.
                    ok = other in {"audit", "accounts"} or module == "grants" or any(
                        module == allowed or module.startswith(f"{allowed}.") for allowed in EDGE_READS[app]
                    )
                if not ok:
                    bad.append(f"{rel} imports {module}")
    return bad


# The ORM's writes. `update` is one only on a queryset (`X.objects...update()`); a dict's or a QueryDict's is not.
ORM_WRITES = {"save", "delete", "create", "bulk_create", "bulk_update", "get_or_create", "update_or_create"}


def _on_a_queryset(node) -> bool:
    while isinstance(node, (ast.Attribute, ast.Call)):
        if isinstance(node, ast.Attribute) and node.attr == "objects":
            return True
        node = node.func if isinstance(node, ast.Call) else node.value
    return False


def orm_writes(path: Path) -> list[str]:
    """Return `line: method` for every ORM write in `path`: `.save()`, `.objects.create()`, `....update()`, ..."""
    found = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = node.func.attr
            if method in ORM_WRITES or (method == "update" and _on_a_queryset(node.func.value)):
                found.append(f"{node.lineno}: {method}")
    return found


def edge_writes():
    return [
        f"{path.relative_to(ROOT).as_posix()}:{write}"
        for app in EDGE_READS for path in sources(app, migrations=False) for write in orm_writes(path)
    ]


def resolve(dotted: str):
    """Import `dotted` the way django-q and import_string do: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ModuleNotFoundError(dotted)


def all_sources():
    return [path for app in sorted(APPS) for path in sources(app)]


def test_apps_import_only_downwards():
    assert edges_violating() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "log.py").write_text("from grants.models import Grant\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert edges_violating() == ["audit/log.py imports grants.models", "audit/log.py imports grants.models.Grant"]


def test_reports_read_the_core_only_through_its_reads(tmp_path, monkeypatch):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "views.py").write_text(
        "from grants import lifecycle\nfrom grants.selectors import decisions\n"
        "from grants.models import Grant\nimport jitportal.ops\n"
    )
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert edges_violating() == ["reports/views.py imports grants.lifecycle", "reports/views.py imports jitportal.ops"]


def test_audit_no_longer_holds_the_report_pages():
    pages = {"views.py", "tables.py", "filters.py", "urls.py", "reports.py"}
    assert [p.name for p in sources("audit") if p.name in pages] == []


def test_edges_never_write_a_row_themselves():
    assert edge_writes() == []


def test_the_write_check_sees_a_save_and_a_queryset_update_but_not_a_dicts(tmp_path, monkeypatch):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "views.py").write_text(
        "grant.save(update_fields=['status'])\nGrant.objects.filter(pk=1).update(status='revoked')\n"
        "applied = {}\napplied.update({'a': 1})\nreview.delete()\n"
    )
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert edge_writes() == ["reports/views.py:1: save", "reports/views.py:2: update", "reports/views.py:5: delete"]


def test_the_check_sees_an_upward_dotted_task_name(tmp_path, monkeypatch):
    (tmp_path / "audit" / "migrations").mkdir(parents=True)
    (tmp_path / "audit" / "log.py").write_text('async_task("grants.notify.approval_needed", 1)\n')
    (tmp_path / "audit" / "migrations" / "0099_x.py").write_text('defaults = {"func": "grants.tasks.sweep"}\n')
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert sorted(edges_violating()) == [
        "audit/log.py imports grants.notify",
        "audit/migrations/0099_x.py imports grants.tasks",
    ]


def test_every_dotted_task_name_resolves_to_a_callable():
    names = {name: path.relative_to(ROOT).as_posix() for path in all_sources() for name in task_names(path)}
    # The lifecycle's, the sweeper's, the notifier's and the migrations' schedules are all seen.
    assert {"grants.notify.approval_needed", "grants.notify.deliver", "grants.tasks.check_targets", "audit.log.export_head"} <= set(names)

    unresolved = []
    for name, where in sorted(names.items()):
        try:
            ok = callable(resolve(name))
        except (ImportError, AttributeError):
            ok = False
        if not ok:
            unresolved.append(f"{where}: {name}")
    assert unresolved == []


def test_every_dotted_name_in_settings_migrations_and_code_resolves():
    unresolved = []
    for path in all_sources():
        for node in dotted_names(_tree(path)):
            try:
                resolve(node.value)
            except (ImportError, AttributeError):
                unresolved.append(f"{path.relative_to(ROOT).as_posix()}:{node.lineno}: {node.value}")
    assert unresolved == []


def test_the_resolver_reports_a_task_name_that_names_nothing():
    assert callable(resolve("grants.tasks.sweep"))
    for name in ("grants.tasks.no_such_task", "grants.no_such_module.task"):
        try:
            resolve(name)
        except (ImportError, AttributeError):
            continue
        raise AssertionError(f"{name} resolved")
