"""Dependencies point one way: audit's log <- accounts <- grants <- edges (notifications, report pages) <- jitportal.

A dependency is an `import` statement or a dotted name in a string (a task
name given to `async_task`, `schedule`, `_enqueue` or a `Schedule.func`, a
setting, a registry entry): code that enqueues "grants.notify.x" depends on
grants.notify as surely as code that imports it. Migrations count too.
"""

import ast
import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = {"audit", "accounts", "grants", "notifications", "jitportal"}

# The edges: apps on top of the core. They do not import each other, and use of the core only what
# EDGE_USES_OF_CORE names; they never write a grants model themselves (the lifecycle does).
EDGES = {"notifications"}
EDGE_USES_OF_CORE = {
    "grants.lifecycle": "every write",
    "grants.selectors": "reads",
    "grants.policy": "the pure rules (steps, the current step)",
    "grants.events": "what the core announces",
    "grants.models": "model types, and reads of their rows",
    "grants.durations": "human_duration, a pure formatting function",
}
# Calls that write a row: on a grants model's manager or queryset in an edge, or `.save()`/`.delete()` on any
# row (the edges have no models of their own).
WRITES = {
    "create", "update", "delete", "bulk_create", "bulk_update", "update_or_create", "get_or_create",
    "save", "select_for_update",
}  # fmt: skip

# Modules of the core exempted from "grants never names an edge", each with its reason.
CORE_NAMING_AN_EDGE = {
    "grants/notify.py": "the old task names (grants.notify.*) re-exported for one release; remove it and this line",
}

# Today's exemptions from "audit imports none of our apps", each with its reason.
# The report pages live in audit until they move to reports/ (issue 13); they
# read grants only through grants.selectors, and accounts for user names.
AUDIT_REPORT_MODULES = {
    "views.py": "report pages (move to reports/)",
    "tables.py": "report tables (move to reports/)",
    "filters.py": "report filters (move to reports/)",
    "urls.py": "report URLs (move to reports/)",
    "reports.py": "report scope and columns (move to reports/)",
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


def _edge_may_use(module: str) -> bool:
    # `from grants import lifecycle` names the package too, which holds nothing.
    return module == "grants" or any(module == used or module.startswith(used + ".") for used in EDGE_USES_OF_CORE)


def edges_violating():
    bad = []
    for app in ("audit", "accounts", "grants", *sorted(EDGES)):
        for path in sources(app):
            for module in sorted(imported_apps(path)):
                other = module.split(".")[0]
                if other == app:
                    continue
                rel = path.relative_to(ROOT).as_posix()
                if app == "audit" and path.name in AUDIT_REPORT_MODULES and "migrations" not in path.parts:
                    ok = module.startswith("grants.selectors") or other == "accounts"
                elif app == "audit":
                    ok = False  # the log imports none of our apps
                elif app == "accounts":
                    ok = other == "audit"
                elif app in EDGES:
                    ok = other in {"audit", "accounts"} or (other == "grants" and _edge_may_use(module))
                else:  # grants
                    ok = other in {"audit", "accounts"} or (other in EDGES and rel in CORE_NAMING_AN_EDGE)
                if not ok:
                    bad.append(f"{rel} imports {module}")
    return bad


def edge_names_in_core():
    """Return the strings of the core (docstrings too) that name an edge's module, e.g. "notifications.tasks"."""
    named = re.compile(rf"(?<![\w.])({'|'.join(sorted(EDGES))})\.\w")
    found = []
    for path in sources("grants"):
        rel = path.relative_to(ROOT).as_posix()
        if rel in CORE_NAMING_AN_EDGE:
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and named.search(node.value):
                found.append(f"{rel}:{node.lineno}: {node.value[:60]!r}")
    return found


def edge_writes():
    """Return the calls in the edges that write a grants model's rows (or any row, through `.save()`/`.delete()`)."""
    found = []
    for app in sorted(EDGES):
        for path in sources(app, migrations=False):
            tree = _tree(path)
            models = {
                alias.asname or alias.name
                for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module in ("grants.models", "grants")
                for alias in node.names
                if node.module == "grants.models" or alias.name == "models"
            }
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or getattr(node.func, "attr", None) not in WRITES:
                    continue
                root = node.func.value
                while isinstance(root, (ast.Attribute, ast.Call, ast.Subscript)):
                    root = root.func if isinstance(root, ast.Call) else root.value
                on_a_row = node.func.attr in ("save", "delete") and not node.args
                if on_a_row or isinstance(root, ast.Name) and root.id in models:
                    found.append(f"{path.relative_to(ROOT).as_posix()}:{node.lineno}: .{node.func.attr}()")
    return found


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


def test_the_check_sees_an_upward_dotted_task_name(tmp_path, monkeypatch):
    (tmp_path / "audit" / "migrations").mkdir(parents=True)
    (tmp_path / "audit" / "log.py").write_text('async_task("grants.notify.approval_needed", 1)\n')
    (tmp_path / "audit" / "migrations" / "0099_x.py").write_text('defaults = {"func": "grants.tasks.sweep"}\n')
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert sorted(edges_violating()) == [
        "audit/log.py imports grants.notify",
        "audit/migrations/0099_x.py imports grants.tasks",
    ]


def test_the_core_never_names_an_edge_not_even_in_a_string():
    assert edge_names_in_core() == []


def test_the_check_sees_the_core_naming_an_edge(tmp_path, monkeypatch):
    (tmp_path / "grants").mkdir()
    source = '"""Then notifications.tasks tells them."""\nx = "notifications"  # the word alone names no module\n'
    (tmp_path / "grants" / "lifecycle.py").write_text(source)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert edge_names_in_core() == ["grants/lifecycle.py:1: 'Then notifications.tasks tells them.'"]


def test_edges_do_not_write_grants_models():
    assert edge_writes() == []


def test_the_check_sees_an_edge_writing(tmp_path, monkeypatch):
    (tmp_path / "notifications").mkdir()
    (tmp_path / "notifications" / "tasks.py").write_text(
        "from grants.models import Grant\nfrom accounts.models import NotificationPreference\n"
        "Grant.objects.filter(pk=1).update(expires_at=None)\n"
        "NotificationPreference.objects.filter(pk=1).update(slack=False)\n"
        "grant.save()\n"
    )
    (tmp_path / "notifications" / "views.py").write_text("from grants import lifecycle\nimport reports.views\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(globals(), "EDGES", {"notifications", "reports"})
    monkeypatch.setitem(globals(), "APPS", APPS | {"reports"})
    assert edge_writes() == ["notifications/tasks.py:3: .update()", "notifications/tasks.py:5: .save()"]
    assert edges_violating() == ["notifications/views.py imports reports.views"]


def test_every_dotted_task_name_resolves_to_a_callable():
    names = {name: path.relative_to(ROOT).as_posix() for path in all_sources() for name in task_names(path)}
    # The lifecycle's, the sweeper's, the notifications' and the migrations' schedules are all seen.
    assert {
        "notifications.tasks.approval_needed", "notifications.tasks.drift_found_by_id",
        "notifications.tasks.emergency_login_used", "notifications.tasks.decide_from_slack",
        "notifications.delivery.deliver", "grants.tasks.check_targets", "audit.log.export_head",
    } <= set(names)  # fmt: skip

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


def test_the_old_notification_task_names_still_run_the_same_tasks_for_one_release():
    # Queued or scheduled by a portal before the notifications app (grants/notify.py, to be removed).
    import grants.notify

    moved = {"deliver": "notifications.delivery.deliver"}
    for name in grants.notify.__all__:
        assert resolve(f"grants.notify.{name}") is resolve(moved.get(name, f"notifications.tasks.{name}"))


def test_the_resolver_reports_a_task_name_that_names_nothing():
    assert callable(resolve("grants.tasks.sweep"))
    for name in ("grants.tasks.no_such_task", "grants.no_such_module.task"):
        try:
            resolve(name)
        except (ImportError, AttributeError):
            continue
        raise AssertionError(f"{name} resolved")
