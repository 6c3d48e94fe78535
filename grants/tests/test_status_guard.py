"""The status guard: nothing outside grants/lifecycle.py writes `status`, and inside it only `_transition*` do.

The code is parsed (`ast`), not searched with a regular expression, so a
write is seen whatever it looks like: an assignment (also in a tuple), a
`status=` keyword, `**` keywords or a `defaults` dict, `setattr`,
`bulk_update` or `save(update_fields=...)` naming it, `__dict__`, or SQL
in a string. What the parser cannot tell apart from a write (a `**` of a
variable, a `setattr` with a computed name) counts as one unless listed
in ALLOWED below with the reason.
"""

import ast
import datetime
import pathlib
import re
import textwrap

import pytest
from django.apps import apps
from django.utils import timezone

from grants import lifecycle
from grants.models import AccessRequest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Calls whose `status=` keyword reads: lookups, and HTTP status codes.
READS = {
    "filter",
    "exclude",
    "get",
    "Q",
    "When",
    "get_object_or_404",
    "get_list_or_404",
    "dict",
}  # dict(): seen where it is spread
RESPONSES = {"HttpResponse", "JsonResponse", "StreamingHttpResponse", "FileResponse", "render", "create_response"}
# Our own helpers that hand their keywords to filter() and nothing else.
READ_HELPERS = {"_claimed_grant", "first_of_bundle"}
# Calls that write the keywords (or a `**` dict) they are given, besides model constructors.
WRITES = {"update", "create", "get_or_create", "update_or_create"}
SQL = re.compile(r"\bupdate\s+\S+\s+set\b[^;]*?\bstatus\b", re.IGNORECASE)

# (path, function, form): why what the parser flags there is not a status write.
ALLOWED = {
    (
        "accounts/adapter.py",
        "sync_user_from_claims",
        "setattr",
    ): "sets the user's first and last name from the IdP's claims",
    (
        "benchmarks/expiry_lag.py",
        "_bulk",
        "keyword",
    ): "`--setup bulk` writes approved requests and active grants as the lifecycle leaves them (a benchmark's set-up)",
}
# Where a status write belongs: the lifecycle's two writers check every move against ALLOWED_REQUEST/ALLOWED_GRANT.
LIFECYCLE_WRITERS = {"_transition", "_transition_many"}


def _name(func) -> str:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _mentions_status(node) -> bool:
    """Return whether a literal names status (a "status" string in it), or is not a literal we can read (None)."""
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return any(_mentions_status(e) for e in node.elts)
    if isinstance(node, ast.Starred):
        return False  # the literal part decides; what is starred is read where it is built
    return isinstance(node, ast.Constant) and node.value == "status"


def _dict_has_status(node) -> bool | None:
    """Return whether a dict literal (or dict(...) call) has a status key; None if it is not one."""
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            return True  # {**other}: cannot tell
        return any(isinstance(k, ast.Constant) and k.value == "status" for k in node.keys)
    if isinstance(node, ast.Call) and _name(node.func) == "dict" and not node.args:
        return any(k.arg in ("status", None) for k in node.keywords)
    return None


def _targets(target):
    if isinstance(target, (ast.Tuple, ast.List)):
        for e in target.elts:
            yield from _targets(e)
    elif isinstance(target, ast.Starred):
        yield from _targets(target.value)
    else:
        yield target


def _receiver(func) -> str:
    """Return the name a method chain starts from: "Target" for Target.objects.update_or_create."""
    while isinstance(func, (ast.Attribute, ast.Call)):
        func = func.value if isinstance(func, ast.Attribute) else func.func
    return getattr(func, "id", "")


def _call_writes(node: ast.Call, models: set[str], others: set[str]) -> list[str]:
    name = _name(node.func)
    if name in READS or name in RESPONSES or name in READ_HELPERS:
        return []
    if name in WRITES and isinstance(node.func, ast.Attribute) and _receiver(node.func) in others:
        return []  # Target.objects.update_or_create(...): a model without a status
    found = []
    writer = name in WRITES or name in models
    for kw in node.keywords:
        if kw.arg == "status":
            found.append("keyword")
        elif kw.arg is None and writer and _dict_has_status(kw.value) is not False:
            found.append("**")
        elif kw.arg in ("defaults", "create_defaults") and writer and _dict_has_status(kw.value) is not False:
            found.append("defaults")
        elif kw.arg == "update_fields" and _mentions_status(kw.value):
            found.append("save")
    if name == "setattr" and isinstance(node.func, ast.Name) and len(node.args) >= 2:
        field = node.args[1]
        if not isinstance(field, ast.Constant) or field.value == "status":
            found.append("setattr")
    if name == "bulk_update":
        fields = (
            node.args[1]
            if len(node.args) >= 2
            else next((kw.value for kw in node.keywords if kw.arg == "fields"), None)
        )
        literal = isinstance(fields, (ast.List, ast.Tuple, ast.Set))
        if fields is None or not literal or _mentions_status(fields):
            found.append("bulk_update")
    if name == "save" and any(_mentions_status(a) for a in node.args):
        found.append("save")
    return found


def status_writes(
    source: str, *, models=frozenset({"AccessRequest", "Grant"}), others=frozenset({"Target"})
) -> list[tuple[int, str, str]]:
    """Return (line, form, enclosing function) of every status write `source` makes, or may make.

    `models` name the model classes with a status field, `others` those without.
    """
    tree = ast.parse(source)
    found = []

    def visit(node, function, klass=""):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if isinstance(node, ast.ClassDef):
            klass = node.name
        forms = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in (t for top in targets for t in _targets(top)):
                own = (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                )
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr == "status"
                    and not (own and klass and klass not in models)
                ):
                    forms.append("assign")  # but an exception's own self.status (an HTTP code) is no model's
                if (
                    isinstance(target, ast.Subscript)
                    and isinstance(target.slice, ast.Constant)
                    and target.slice.value == "status"
                ):
                    holder = target.value
                    if (isinstance(holder, ast.Attribute) and holder.attr == "__dict__") or (
                        isinstance(holder, ast.Call) and _name(holder.func) == "vars"
                    ):
                        forms.append("__dict__")
        elif isinstance(node, ast.Call):
            forms += _call_writes(node, models, others)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
            forms.append("sql")
        found.extend((node.lineno, form, function) for form in forms)
        for child in ast.iter_child_nodes(node):
            visit(child, function, klass)

    visit(tree, "")
    return found


def _sources():
    for path in sorted([*ROOT.glob("*.py"), *ROOT.glob("*/**/*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith((".venv", "node_modules", "tests/")) or "/tests/" in rel or "/migrations/" in rel:
            continue
        yield rel, path.read_text()


def _models() -> tuple[set[str], set[str]]:
    """Return the names of the installed models with a status field, and of those without."""
    with_status = {m.__name__ for m in apps.get_models() if any(f.name == "status" for f in m._meta.get_fields())}
    return with_status, {m.__name__ for m in apps.get_models()} - with_status


def test_nothing_outside_the_lifecycle_writes_status():
    models, others = _models()
    assert {"AccessRequest", "Grant"} <= models and "Target" in others
    offenders = [
        f"{rel}:{line} ({form}, in {function or 'the module'})"
        for rel, source in _sources()
        if rel != "grants/lifecycle.py"
        for line, form, function in status_writes(source, models=models, others=others)
        if (rel, function, form) not in ALLOWED
    ]
    assert offenders == []


def test_the_lifecycle_writes_status_only_through_its_checked_transitions():
    source = (ROOT / "grants/lifecycle.py").read_text()
    models, others = _models()
    writes = status_writes(source, models=models, others=others)
    assert {function for _, _, function in writes} == LIFECYCLE_WRITERS
    # And those two check first: _check is the first thing each calls.
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in LIFECYCLE_WRITERS:
            calls = [n for n in ast.walk(node) if isinstance(n, ast.Call)]
            first = min(calls, key=lambda n: (n.lineno, n.col_offset))
            assert _name(first.func) == "_check", node.name


@pytest.mark.parametrize(
    "code, form",
    [
        ("req.status = 'approved'", "assign"),
        ("req.status, req.decided_at = 'approved', now", "assign"),
        ("a.b.status += 'x'", "assign"),
        ("grant.status: str = 'revoked'", "assign"),
        ("Grant.objects.filter(pk=1).update(status='revoked')", "keyword"),
        ("AccessRequest.objects.create(status='approved')", "keyword"),
        ("Grant(status='active').save()", "keyword"),
        ("mark(grant, status='revoked')", "keyword"),
        ("Grant.objects.filter(pk=1).update(**changes)", "**"),
        ("Grant.objects.filter(pk=1).update(**{'status': 'revoked'})", "**"),
        ("Grant.objects.filter(pk=1).update(**dict(status='revoked'))", "**"),
        ("AccessRequest.objects.create(**fields)", "**"),
        ("Grant(**fields)", "**"),
        ("Grant.objects.update_or_create(pk=1, defaults={'status': 'revoked'})", "defaults"),
        ("Grant.objects.get_or_create(pk=1, defaults=changes)", "defaults"),
        ("setattr(grant, 'status', 'revoked')", "setattr"),
        ("for k, v in changes.items():\n    setattr(grant, k, v)", "setattr"),
        ("Grant.objects.bulk_update(grants, ['status', 'last_error'])", "bulk_update"),
        ("Grant.objects.bulk_update(grants, fields=('status',))", "bulk_update"),
        ("Grant.objects.bulk_update(grants, FIELDS)", "bulk_update"),
        ("grant.save(update_fields=['status'])", "save"),
        ("grant.__dict__['status'] = 'revoked'", "__dict__"),
        ("vars(grant)['status'] = 'revoked'", "__dict__"),
        ("cursor.execute('UPDATE grants_grant SET status = %s WHERE id = %s', ['revoked', 1])", "sql"),
        ("class Grant:\n    def save(self):\n        self.status = 'active'", "assign"),
        ("Grant.objects.update_or_create(pk=1, defaults={**wanted})", "defaults"),
    ],
)
def test_the_guard_sees_each_form_of_a_status_write(code, form):
    assert [f for _, f, _ in status_writes(code)] == [form]


def test_the_guard_lets_reads_and_other_statuses_be():
    code = textwrap.dedent("""
        Grant.objects.filter(status='active').exclude(status='failed').get(status='active')
        Q(status='active') | Q(request__status='pending')
        When(status='active', then=1)
        HttpResponse(status=204); JsonResponse({}, status=400); render(request, 'x.html', status=404)
        out = {"status": req.status}
        out["status"] = "ok"
        Grant.objects.filter(pk=1).update(last_error="", **{"next_attempt_at": None})
        Grant.objects.get_or_create(pk=1, defaults={"last_error": ""})
        setattr(grant, "last_error", "")
        Grant.objects.bulk_update(grants, ["last_error"])
        grant.save(update_fields=["last_error"])
        status = grant.status
        Target.objects.update_or_create(name="db", defaults={**wanted})
        log.info("update the grant, set its status later")
    """)
    assert status_writes(code) == []


def test_the_guard_names_the_function_a_write_is_in():
    code = "def sneaky(grant):\n    grant.status = 'revoked'\n"
    assert status_writes(code) == [(2, "assign", "sneaky")]


def test_an_error_may_keep_its_own_http_status():
    code = "class ApiError(Exception):\n    def __init__(self, status):\n        self.status = status\n"
    assert status_writes(code) == []


# Every status write goes through _check ---------------------------------------------


def test_lapsing_is_checked_against_the_request_table_like_every_other_move(pending_request, monkeypatch):
    # Regression: lapse_stale_requests assigned `lapsed` without _check, so a table
    # without that move did not stop it.
    monkeypatch.setitem(lifecycle.ALLOWED_REQUEST, AccessRequest.Status.PENDING, {AccessRequest.Status.APPROVED})
    later = timezone.now() + datetime.timedelta(days=30)
    with pytest.raises(lifecycle.TransitionError, match="cannot become lapsed"):
        lifecycle.lapse_stale_requests(now=later)
    pending_request.refresh_from_db()
    assert pending_request.status == "pending"
