"""The container image and compose.yaml, for real: built with podman, run as a stack, used by people.

The tests run in order and build on each other: ana signs in through the IdP and asks for access, marc
approves, ana's credentials work on the target, and releasing the access removes it there. Each step's
work happens in the stack's own containers (the web's gunicorn, the worker's qcluster, the timer). Then the
trail of it all: the portal's database role cannot rewrite it, and it verifies against a signed head that
the worker exported. `check --deploy` runs in the stack too, against its PostgreSQL.
"""

import re
import time

import psycopg
import pytest

from .browser import Person, forms
from .conftest import PASSWORDS, PROFILE_TITLE, image_config, run

pytestmark = pytest.mark.image

JUSTIFICATION = "Checking the order export after the container upgrade"


def test_the_image_runs_as_an_unprivileged_user_and_checks_its_own_health(portal_image):
    image = image_config(portal_image)
    config = image["Config"]
    assert config["User"] == "10001:10001"
    # podman shows the check beside Config; it is kept only in the docker format (`podman build --format docker`).
    assert image["Healthcheck"]["Test"] == ["CMD", "python", "-m", "jitportal.healthcheck"]
    assert config["Cmd"][:2] == ["gunicorn", "jitportal.wsgi:application"]
    who = run("image-id", ["podman", "run", "--rm", "--network", "host", "--no-healthcheck", portal_image, "id", "-u"])
    assert who.stdout.strip() == "10001"


def test_without_an_identity_provider_the_image_refuses_to_start_and_says_what_to_set(portal_image):
    result = run(
        "image-no-idp",
        [
            "podman",
            "run",
            "--rm",
            "--network",
            "host",
            "--no-healthcheck",
            portal_image,
            "python",
            "manage.py",
            "check",
        ],
        check=False,
    )
    assert result.returncode != 0
    assert "No identity provider is configured. Set OIDC_ISSUER" in result.stderr


def test_every_service_of_the_stack_runs_from_the_one_image(stack, portal_image):
    for service in ("web", "worker", "timer"):
        state = run(
            "stack-state",
            ["podman", "inspect", "--format", "{{.State.Status}} {{.ImageName}}", stack.container(service)],
        )
        assert state.stdout.split() == ["running", portal_image], (service, stack.logs(service)[-2000:])
    assert "expiry timer running" in stack.logs("timer")
    assert re.search(r"Q Cluster \S+ (\[\S+\] )?running", stack.logs("worker")), stack.logs("worker")[-2000:]
    # Secrets came in as files; none is in the containers' environment.
    env = run("stack-env", ["podman", "inspect", "--format", "{{json .Config.Env}}", stack.container("web")]).stdout
    assert "SECRET_KEY_FILE=/run/secrets/secret_key" in env and "SECRET_KEY=" not in env.replace("SECRET_KEY_FILE=", "")
    assert "DATABASE_PASSWORD_FILE=/run/secrets/db_password" in env
    # The tables' owner is migrate's alone; the audit signing key the worker's, which exports the heads.
    for service in ("web", "worker", "timer"):
        env = run("stack-env", ["podman", "inspect", "--format", "{{json .Config.Env}}", stack.container(service)])
        assert "MIGRATE_DATABASE_URL" not in env.stdout, service
        assert ("AUDIT_SIGNING_KEY_FILE=/run/secrets/audit_signing_key" in env.stdout) == (service == "worker")


def test_the_web_answers_its_health_check_and_serves_the_collected_static_files(stack):
    assert run("web-healthcheck", ["podman", "healthcheck", "run", stack.container("web")], check=False).returncode == 0
    anyone = Person(stack.url, "nobody", "")
    css = anyone.get("/static/jitportal.css")
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert anyone.get("/readyz").json()["checks"]["database"] == "ok"
    login = anyone.get("/accounts/login/")
    assert login.status_code == 200 and "Single sign-on" in login.text


def test_the_stack_passes_the_deploy_checks_against_its_own_database(stack):
    # In the worker: its environment is the one with the audit signing key (README "The audit trail"), and
    # the checks read the portal role's powers over the trail in the stack's PostgreSQL. compose.yaml's own
    # values stand in for what compose.test.yaml changes to serve plain HTTP on a loopback port.
    result = stack.exec(
        "stack-check-deploy",
        "worker",
        "env",
        *stack.production_env("worker"),
        "python",
        "manage.py",
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The one silenced is security.W021 (HSTS preload): the domain owner's decision (jitportal/settings.py).
    assert "System check identified no issues (1 silenced)." in result.stdout, result.stdout + result.stderr


@pytest.fixture(scope="module")
def journey():
    return {}


def test_ana_signs_in_through_the_identity_provider_and_asks_for_access(stack, idp, journey):
    ana = journey["ana"] = Person(stack.url, "ana", PASSWORDS["ana"])
    ana.sign_in(idp.issuer)
    form = ana.get("/access/request/")
    profile = {title: value for value, title in _options(form, "profile")}[PROFILE_TITLE]
    sent = ana.submit(
        form, r"^/access/request/$", profile=profile, duration="1h", justification=JUSTIFICATION, ticket=""
    )
    match = re.search(r"/access/requests/(\d+)/$", sent.url)
    assert match, (sent.url, sent.text[:2000])
    journey["request"] = int(match.group(1))
    assert "Pending" in sent.text or "pending" in sent.text


def test_marc_approves_it_from_his_inbox(stack, idp, journey):
    marc = Person(stack.url, "marc", PASSWORDS["marc"])
    marc.sign_in(idp.issuer)
    inbox = marc.get("/access/inbox/")
    assert JUSTIFICATION in inbox.text
    decided = marc.submit(inbox, rf"^/access/requests/{journey['request']}/decide$", action="approve", comment="ok")
    assert f"Request #{journey['request']} approved." in decided.text, decided.text[:3000]


def test_the_worker_provisions_it_and_ana_credentials_work_on_the_target(stack, target, journey):
    ana = journey["ana"]
    page = _wait_for_page(ana, "/access/", r"/access/grants/(\d+)/credentials")
    grant = int(re.search(r"/access/grants/(\d+)/credentials", page.text).group(1))
    shown = ana.submit(page, rf"^/access/grants/{grant}/credentials$")
    assert shown.status_code == 200, shown.text[:2000]
    credentials = dict(re.findall(r"<dt>([^<]+)</dt><dd><code>([^<]*)</code>", shown.text))
    username, password = credentials["Username"], credentials["Password"]
    with psycopg.connect(host=target.host, port=target.port, dbname="appdb", user=username, password=password) as conn:
        assert conn.execute("SELECT current_user, pg_has_role('app_readonly', 'member')").fetchone() == (username, True)
    journey.update(grant=grant, username=username)


def test_releasing_the_access_removes_it_from_the_target(stack, target, journey):
    ana = journey["ana"]
    my_access = ana.get("/access/")
    released = ana.submit(my_access, rf"^/access/grants/{journey['grant']}/release$")
    assert "Releasing" in released.text, released.text[:2000]

    def role_gone():
        with psycopg.connect(target.admin_dsn) as conn:
            return (
                conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", [journey["username"]]).fetchone()[0]
                == 0
            )

    _wait_until(role_gone)
    # The portal says so once the worker has read the target again and found the role gone.
    _wait_until(lambda: "Revoked" in ana.get(f"/access/grants/{journey['grant']}/").text)


def test_the_portal_role_of_the_stack_cannot_rewrite_or_remove_the_audit_trail(stack, journey):
    # After the journey above: the trail holds ana's request, marc's approval, the grant and its release.
    with psycopg.connect(**stack.portal_dsn(), autocommit=True) as conn:
        role, owner = conn.execute(
            "SELECT current_user, tableowner FROM pg_tables WHERE tablename = 'audit_auditevent'"
        ).fetchone()
        assert (role, owner) == ("jitportal_app", "jitportal")
        events = conn.execute("SELECT count(*) FROM audit_auditevent").fetchone()[0]
        assert events > 0
        for statement in (
            "UPDATE audit_auditevent SET details = '{}'",
            "DELETE FROM audit_auditevent",
            "TRUNCATE audit_auditevent",
            "ALTER TABLE audit_auditevent DISABLE TRIGGER USER",
            "DROP TABLE audit_auditevent",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        assert conn.execute("SELECT count(*) FROM audit_auditevent").fetchone()[0] == events


def test_the_worker_exports_signed_audit_heads_and_the_chain_verifies_against_them(stack, journey):
    heads_file = "/var/lib/jitportal/audit/heads.txt"  # compose.yaml's AUDIT_HEAD_FILE, on the audit-heads volume
    line = stack.exec("audit-head", "worker", "python", "manage.py", "audit", "head", "--file", heads_file).stdout
    assert re.search(r"events=\d+ head_id=\d+ head=\S+ sig=\S+", line), line
    verified = stack.exec("audit-verify", "worker", "python", "manage.py", "audit", "verify").stdout
    assert "Audit chain intact" in verified, verified
    # The worker's schedule exported one at its start already: every head there is signed, and checked.
    assert re.search(r"^Signed: \d+ heads?, every signature good\.$", verified, re.M), verified
    assert "unsigned" not in verified, verified


def _options(page, name):
    for form in forms(page.text):
        if name in form["options"]:
            return form["options"][name]
    raise AssertionError(f"no <select name={name}> on {page.url}")


def _wait_until(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.5)


def _wait_for_page(person, path, pattern, timeout=60):
    found = {}

    def ready():
        page = person.get(path)
        if re.search(pattern, page.text):
            found["page"] = page
            return True
        return False

    _wait_until(ready, timeout)
    return found["page"]
