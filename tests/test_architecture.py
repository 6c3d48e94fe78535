"""Dependencies point one way: audit's log <- accounts <-
grants <- the edges (api, notifications, reports) <- jitportal.

A dependency is an `import` statement or a dotted name in a string (a task
name given to `async_task`, `schedule`, `_enqueue` or a `Schedule.func`, a
setting, a registry entry): code that enqueues "grants.notify.x" depends on
grants.notify as surely as code that imports it. Migrations count too.

Above them all, the outer packages: nothing imports jitportal, devtools,
contrib, benchmarks or cli, but for the demo runner, which starts the
throwaway target cluster (tests and benchmarks are not checked). And
jitportal's own modules import one another without a cycle.
"""

import ast
import importlib
import re
from pathlib import Path

import grants.notify

ROOT = Path(__file__).resolve().parents[1]
APPS = {"audit", "accounts", "grants", "api", "notifications", "reports", "jitportal"}
# The outer packages, by their folder: only themselves import them, and the modules OUTER_ALLOWED names.
OUTER = {"jitportal", "devtools", "contrib", "benchmarks", "cli"}
# Import names that are not their folder's: the command-line client's package is cli/jit.
IMPORT_FOLDERS = {"jit": "cli"}
OUTER_ALLOWED = {
    "jitportal/run.py": {"devtools": "`make run` starts the demo's target cluster (devtools/pgcluster.py)"},
}

# The edges: apps on top of the core. They do not import each other, and use of the core only what
# EDGE_USES_OF_CORE names; they never write a grants model themselves (the lifecycle does).
# (An edge whose folder does not exist yet has no sources; naming it here
# already makes an import of it a dependency the check sees.)
EDGES = {"api", "notifications", "reports"}
EDGE_USES_OF_CORE = {
    "grants.lifecycle": "every write",
    "grants.reviews": "the access reviews' writes (campaigns, decisions, removals), as the lifecycle's",
    "grants.selectors": "reads",
    "grants.policy": "the pure rules (steps, the current step)",
    "grants.events": "what the core announces",
    "grants.models": "model types, and reads of their rows",
    "grants.durations": "human_duration, a pure formatting function",
}
# Edges that change nothing of the core's: they have no use for grants.lifecycle either.
READ_ONLY_EDGES = {
    "reports": "the auditor's pages read; their writes are the download's audit event and the access reviews' "
    "(grants.reviews)"
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

# Strings that look like dotted paths but name no code: not dependencies, nothing to resolve.
NOT_CODE = {
    "jitportal.audit.head": "a logger name (audit/log.py)",
    "jitportal.audit.sinks": "a logger name (audit/sinks/__init__.py)",
    "jitportal.middleware.forget_request_id": "a signal dispatch_uid (jitportal/middleware.py)",
}

# Calls whose first argument, and keyword/dict key whose value, is a task's dotted name.
TASK_CALLS = {"async_task", "schedule", "_enqueue"}
TASK_KEYS = {"func"}


def roots() -> set[str]:
    """The top-level names of our code (APPS, OUTER and the import names of folders); tests patch APPS."""
    return APPS | OUTER | set(IMPORT_FOLDERS)


def _dotted(value) -> bool:
    """A dotted path into our code: app.module.attribute at least (one dot is a model label or permission)."""
    if not isinstance(value, str) or value in NOT_CODE:
        return False
    parts = value.split(".")
    return len(parts) >= 3 and parts[0] in roots() and all(p.isidentifier() for p in parts)


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
        found |= {n for n in names if n.split(".")[0] in roots()}
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
                if app == "audit":
                    ok = False  # the log imports none of our apps
                elif app == "accounts":
                    ok = other == "audit"
                elif app in EDGES:
                    ok = other in {"audit", "accounts"} or (other == "grants" and _edge_may_use(module))
                    if app in READ_ONLY_EDGES and module.split(".")[:2] == ["grants", "lifecycle"]:
                        ok = False
                else:  # grants
                    ok = other in {"audit", "accounts"} or (other in EDGES and rel in CORE_NAMING_AN_EDGE)
                if not ok:
                    bad.append(f"{rel} imports {module}")
    return bad


def folder(module: str) -> str:
    """Return the top-level folder that holds `module`: 'cli' for jit.client, 'grants' for grants.models."""
    top = module.split(".")[0]
    return IMPORT_FOLDERS.get(top, top)


def outer_imports_violating():
    """Return the imports of an outer package by code of another folder (tests and benchmarks not checked)."""
    bad = []
    for package in sorted((APPS | OUTER) - {"benchmarks"}):
        for path in sources(package):
            rel = path.relative_to(ROOT).as_posix()
            for module in sorted(imported_apps(path)):
                other = folder(module)
                if other in OUTER and other != package and other not in OUTER_ALLOWED.get(rel, {}):
                    bad.append(f"{rel} imports {module}")
    return bad


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Return every name `path` imports, anywhere in it, relative ones made absolute (`from X import y`: X and X.y)."""
    this = module_name(path).split(".")
    package = this if path.name == "__init__.py" else this[:-1]
    names = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
    return names


def import_cycles(package: str) -> list[str]:
    """Return the groups of `package`'s modules (not its tests) that import one another: 'jitportal.a <-> jitportal.b'.

    A group is every module that can reach each other one through imports, whatever the path.
    """
    modules = {module_name(path): path for path in sources(package)}

    def module_of(name):  # the longest prefix of `name` that is one of the package's modules
        parts = name.split(".")
        return next((m for m in (".".join(parts[:cut]) for cut in range(len(parts), 0, -1)) if m in modules), None)

    graph = {
        module: {module_of(name) for name in imported_names(path)} - {None, module} for module, path in modules.items()
    }

    def reachable(start):
        seen, todo = set(), [start]
        while todo:
            for other in graph[todo.pop()] - seen:
                seen.add(other)
                todo.append(other)
        return seen

    reach = {module: reachable(module) for module in graph}
    groups = {frozenset({m} | {o for o in reach[m] if m in reach[o]}) for m in graph if m in reach[m]}
    return sorted(" <-> ".join(sorted(group)) for group in groups)


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


def test_an_edge_uses_the_lifecycle_selectors_policy_and_models_and_nothing_else_of_grants(tmp_path, monkeypatch):
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "views.py").write_text(
        "from accounts import tokens\nfrom audit import log\nfrom grants import lifecycle, selectors\n"
        "from grants.models import Grant\nimport grants.policy\n"
        "from grants.connectors import ssh\nfrom grants.tasks import sweep\n"
        'from reports import columns\nasync_task("notifications.tasks.deliver", 1)\n'
    )
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert edges_violating() == [
        "api/views.py imports grants.connectors",
        "api/views.py imports grants.connectors.ssh",
        "api/views.py imports grants.tasks",
        "api/views.py imports grants.tasks.sweep",
        "api/views.py imports notifications.tasks",
        "api/views.py imports reports",
        "api/views.py imports reports.columns",
    ]


def test_the_core_never_names_the_api(tmp_path, monkeypatch):
    (tmp_path / "grants").mkdir()
    (tmp_path / "grants" / "lifecycle.py").write_text('from api.views import api\nasync_task("api.views.sync", 1)\n')
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert edges_violating() == ["grants/lifecycle.py imports api.views", "grants/lifecycle.py imports api.views.api"]


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


def test_reports_read_the_core_and_import_no_other_edge(tmp_path, monkeypatch):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "views.py").write_text(
        "from grants import lifecycle\nfrom grants.selectors import decisions\n"
        "from grants.models import Grant\nimport notifications.tasks\n"
    )
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert edges_violating() == [
        "reports/views.py imports grants.lifecycle",
        "reports/views.py imports notifications.tasks",
    ]


def test_audit_no_longer_holds_the_report_pages():
    pages = {"views.py", "tables.py", "filters.py", "urls.py", "reports.py"}
    assert [p.name for p in sources("audit") if p.name in pages] == []


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


def test_nothing_imports_the_outer_packages_but_the_demo_runner_the_cluster():
    assert outer_imports_violating() == []


def test_the_check_sees_an_import_of_an_outer_package(tmp_path, monkeypatch):
    files = {
        "grants/tasks.py": "from devtools import pgcluster\n",
        "audit/log.py": 'def f():\n    async_task("benchmarks.common.run", 1)\n',
        "accounts/adapter.py": "import jitportal.settings\nfrom jit.__main__ import main\n",
        "jitportal/urls.py": "from devtools.pgcluster import free_port\nfrom . import metrics\n",
        "jitportal/run.py": "from devtools import pgcluster\nfrom jitportal import settings\n",  # allowed, and itself
        "devtools/pgcluster.py": "import contrib\n",
        "cli/jit/__main__.py": "from jit import client\n",  # its own package
        "grants/tests/test_x.py": "from devtools import pgcluster\nimport benchmarks.common\n",  # tests are not checked
        "benchmarks/common.py": "from devtools import pgcluster\nimport jitportal.settings\n",  # nor are benchmarks
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)

    assert outer_imports_violating() == [
        "accounts/adapter.py imports jit.__main__",
        "accounts/adapter.py imports jit.__main__.main",
        "accounts/adapter.py imports jitportal.settings",
        "audit/log.py imports benchmarks.common",
        "devtools/pgcluster.py imports contrib",
        "grants/tasks.py imports devtools",
        "grants/tasks.py imports devtools.pgcluster",
        "jitportal/urls.py imports devtools.pgcluster",
        "jitportal/urls.py imports devtools.pgcluster.free_port",
    ]


def test_jitportals_modules_import_one_another_without_a_cycle():
    assert import_cycles("jitportal") == []


def test_the_cycle_check_sees_a_cycle_through_a_relative_import_inside_a_function(tmp_path, monkeypatch):
    files = {
        "jitportal/__init__.py": "",
        "jitportal/ops.py": "from .metrics import registry\n",
        "jitportal/metrics.py": "def collect():\n    from .ops import broker\n",
        "jitportal/urls.py": "from . import ops\nfrom jitportal import queues\n",  # imports them, in no cycle
        "jitportal/queues.py": "import jitportal.urls.x\n",  # back to urls: a second group, of two
        "jitportal/settings.py": "from jitportal import settings\n",  # itself: no cycle
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)

    assert import_cycles("jitportal") == ["jitportal.metrics <-> jitportal.ops", "jitportal.queues <-> jitportal.urls"]
