"""Catalog as code: plan shows the diff and its effect on people,
apply is atomic and idempotent, errors name file, line and field."""

import datetime
import textwrap
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from devtools import pgcluster
from grants import catalog, lifecycle
from grants.models import AccessProfile, Grant, Policy, Target

from .conftest import JUSTIFICATION

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "catalog.example.yaml"

BASE = """\
targets:
  appdb:
    kind: postgres
    config: {host: 127.0.0.1, port: 5432, dbname: appdb}
    secret_env: JIT_TEST_PG_DSN
policies:
  std:
    steps:
      - group: db-approvers
profiles:
  ro:
    title: appdb read-only
    target: appdb
    scope: {roles: [app_readonly]}
    max_duration: 4h
    requestable_by: [engineers]
    policy: std
"""


@pytest.fixture
def write(tmp_path):
    def write(text, name="catalog.yaml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return str(path)

    return write


def test_the_example_catalog_applies_and_a_second_apply_changes_nothing(db):
    plan, _ = catalog.apply(EXAMPLE)
    assert not plan.empty
    assert AccessProfile.objects.get(name="appdb-readwrite").policy.steps[1] == {
        "group": "db-owners",
        "manager": False,
        "count": 2,
    }
    again, _ = catalog.apply(EXAMPLE)
    assert again.empty
    assert "no changes" in again.render()


def test_plan_writes_nothing_and_lists_additions(db, write):
    path = write(BASE)
    text = catalog.plan(path).render()
    assert "+ target appdb: add" in text and "+ policy std: add" in text and "+ profile ro: add" in text
    assert not Target.objects.exists() and not AccessProfile.objects.exists()


def test_plan_shows_changed_fields_and_who_gains_or_loses_access(db, write, ana, marc, otto, eve):
    path = write(BASE)
    catalog.apply(path)
    changed = BASE.replace("max_duration: 4h", "max_duration: 2h").replace(
        "requestable_by: [engineers]", "requestable_by: [db-approvers]"
    )
    text = catalog.plan(write(changed)).render()
    assert "~ profile ro: change" in text
    assert "max_duration: 4 h -> 2 h" in text
    # ana (engineers) loses the right to request, otto (db-approvers) gains it; marc is in both.
    assert "profile ro: may request: +otto -ana" in text


def test_apply_changes_the_rows_in_place(db, write):
    path = write(BASE)
    catalog.apply(path)
    catalog.apply(write(BASE.replace("max_duration: 4h", "max_duration: 2h")))
    profile = AccessProfile.objects.get(name="ro")
    assert profile.max_duration == datetime.timedelta(hours=2)
    assert AccessProfile.objects.count() == 1
    assert AuditEvent.objects.filter(action="catalog.applied").count() == 2


def test_a_removed_profile_is_disabled_and_its_grants_run_to_expiry(db, write, ana, otto, pg_target_env):
    path = write(BASE)
    catalog.apply(path)
    profile = AccessProfile.objects.get(name="ro")
    req = lifecycle.submit_request(
        requester=ana, profile=profile, duration=datetime.timedelta(hours=1), justification=JUSTIFICATION
    )
    lifecycle.approve_request(req.pk, actor=otto)
    grant = lifecycle.provision_grant(req.grant.pk)
    without = BASE.split("profiles:")[0] + "profiles: {}\n"
    text = catalog.plan(write(without, "catalog.yaml")).render()
    assert "- profile ro: disable" in text and "live grants: 1" in text
    catalog.apply(path)
    profile.refresh_from_db()
    assert not profile.enabled
    grant.refresh_from_db()
    assert grant.status == Grant.Status.ACTIVE
    with pytest.raises(lifecycle.InvalidRequestError, match="disabled"):
        lifecycle.submit_request(
            requester=ana, profile=profile, duration=datetime.timedelta(hours=1), justification=JUSTIFICATION
        )
    assert catalog.plan(path).empty


def test_revoke_removed_ends_the_grants_of_removed_profiles(db, write, ana, otto, pg_target_env):
    path = write(BASE)
    catalog.apply(path)
    req = lifecycle.submit_request(
        requester=ana,
        profile=AccessProfile.objects.get(name="ro"),
        duration=datetime.timedelta(hours=1),
        justification=JUSTIFICATION,
    )
    lifecycle.approve_request(req.pk, actor=otto)
    grant = lifecycle.provision_grant(req.grant.pk)
    write(BASE.split("profiles:")[0] + "profiles: {}\n")
    call_command("catalog", "apply", path, "--revoke-removed")
    grant.refresh_from_db()
    assert grant.status == Grant.Status.REVOKING and grant.end_reason == "policy"


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        (BASE.replace("kind: postgres", "kind: oracle"), 3, "targets.appdb.kind: unknown kind 'oracle'"),
        (
            BASE.replace("max_duration: 4h", "max_duration: forever"),
            15,
            "profiles.ro.max_duration: write a positive duration",
        ),
        (
            BASE.replace("max_duration: 4h", "max_duration: 4h\n    default_duration: 8h"),
            16,
            "default_duration: is longer than max_duration (4 h)",
        ),
        (BASE.replace("target: appdb\n", "target: nope\n"), 13, "profiles.ro.target: no target 'nope'"),
        (BASE.replace("policy: std", "policy: lax"), 17, "profiles.ro.policy: no policy 'lax'"),
        (BASE.replace("secret_env: JIT_TEST_PG_DSN", "secret_env: postgres://x"), 5, "targets.appdb.secret_env"),
        (BASE.replace("      - group: db-approvers", "      - count: 0"), 9, "steps[1]: name an approver group"),
        (
            BASE.replace("    title: appdb read-only\n", "    colour: red\n    title: x\n"),
            12,
            "profiles.ro.colour: unknown field",
        ),
        (BASE + "  ro:\n    title: again\n", 18, "duplicate key 'ro'"),
        (
            BASE.replace("policies:\n  std:\n", "policies:\n  std:\n    justification: {ticket_pattern: '(INC'}\n"),
            8,
            "not a valid regular expression",
        ),
        (
            BASE.replace(
                "      - group: db-approvers",
                "      - group: db-approvers\n    auto_approve:\n      - business_hours: {tz: Mars/Olympus}",
            ),
            11,
            "unknown time zone 'Mars/Olympus'",
        ),
        ("targets: [1, 2]\n", 1, "targets: must be a mapping"),
        ("targets:\n  a: {kind: postgres\n", 3, "not valid YAML"),
    ],
)
def test_errors_name_file_line_and_field_and_nothing_is_applied(db, write, text, line, fragment):
    path = write(text)
    with pytest.raises(catalog.CatalogError) as exc:
        catalog.apply(path)
    message = "\n".join(exc.value.errors)
    assert fragment in message
    assert f"{path}:{line}:" in message, message
    assert not Target.objects.exists() and not Policy.objects.exists() and not AccessProfile.objects.exists()


def test_plan_refuses_a_scope_naming_pg_execute_server_program_and_nothing_is_applied(db, write, pg_target_env, capsys):
    path = write(
        BASE.replace("scope: {roles: [app_readonly]}", "scope: {roles: [app_readonly, pg_execute_server_program]}")
    )

    with pytest.raises(catalog.CatalogError) as exc:
        catalog.plan(path)
    with pytest.raises(CommandError, match="nothing was applied"):
        call_command("catalog", "apply", path)

    [error] = exc.value.errors
    assert error.startswith(f"{path}:14: profiles.ro.scope: Refusing the scope on target 'appdb'")
    assert "pg_execute_server_program runs programs on the database server" in error
    assert "pg_execute_server_program" in capsys.readouterr().err
    assert not Target.objects.exists() and not AccessProfile.objects.exists()


def test_plan_checks_scopes_on_a_reachable_target_and_passes_good_ones(db, write, pg_target_env):
    the_plan = catalog.plan(write(BASE))

    assert the_plan.warnings == []


def test_plan_warns_when_it_cannot_read_the_target_and_still_shows_the_changes(db, write, monkeypatch, pg_cluster):
    path = write(BASE)
    monkeypatch.delenv("JIT_TEST_PG_DSN", raising=False)
    assert "scopes not checked on the target (Environment variable JIT_TEST_PG_DSN" in catalog.plan(path).render()

    port = pgcluster.free_port()
    monkeypatch.setenv("JIT_TEST_PG_DSN", pg_cluster.admin_dsn.replace(f":{pg_cluster.port}/", f":{port}/"))
    text = catalog.plan(path).render()

    assert "+ profile ro: add" in text
    assert "warning: target appdb: scopes not checked on the target (Cannot check the scope on target 'appdb'" in text
    assert f"(127.0.0.1:{port})" in text
    assert text.endswith("provisioning checks them.")
    assert pg_cluster.admin_password not in text


def billion_laughs() -> str:
    """Nine levels of nine aliases each: 549 bytes that stand for 9**9 (387 million) strings."""
    lines = ["targets:", "  appdb:", "    kind: postgres", "    secret_env: JIT_TEST_PG_DSN", "    config:"]
    lines.append("      a: &a [" + ", ".join(['"lol"'] * 9) + "]")
    for previous, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"      {name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_file_is_refused_at_once_with_the_line(db, write, capsys):
    path = write(billion_laughs())
    # Loading alone used to succeed (the aliases share one list); the plan then expanded them until memory ran out.
    with pytest.raises(catalog.CatalogError) as exc:
        catalog.load(path)
    assert exc.value.errors == [f"{path}:6: YAML anchors (&a) are not allowed in a catalog file; write the value out"]
    with pytest.raises(CommandError, match="nothing was applied"):
        call_command("catalog", "plan", path)
    assert "YAML anchors (&a) are not allowed" in capsys.readouterr().err
    assert not Target.objects.exists()


def test_an_alias_without_its_anchor_is_refused_too(db, write):
    path = write(BASE.replace("requestable_by: [engineers]", "requestable_by: *engineers"))
    with pytest.raises(catalog.CatalogError) as exc:
        catalog.load(path)
    assert exc.value.errors == [
        f"{path}:16: YAML aliases (*engineers) are not allowed in a catalog file; write the value out"
    ]


def test_the_command_exits_non_zero_on_errors(db, write, capsys):
    path = write(BASE.replace("kind: postgres", "kind: oracle"))
    with pytest.raises(CommandError, match="nothing was applied"):
        call_command("catalog", "plan", path)
    assert "unknown kind" in capsys.readouterr().err


def test_a_missing_file_is_a_clear_error(db):
    with pytest.raises(catalog.CatalogError, match="cannot read the file"):
        catalog.plan("/nonexistent/catalog.yaml")


def test_managed_rows_are_read_only_in_the_admin(db, write, admin_client):
    catalog.apply(write(BASE))
    profile = AccessProfile.objects.get(name="ro")
    page = admin_client.get(f"/admin/grants/accessprofile/{profile.pk}/change/").content.decode()
    assert 'name="max_duration"' not in page  # shown, not editable
    assert admin_client.post(f"/admin/grants/accessprofile/{profile.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AccessProfile.objects.filter(pk=profile.pk).exists()


def test_groups_named_in_the_file_are_created(db, write):
    catalog.apply(write(BASE))
    assert {"engineers", "db-approvers"} <= set(Group.objects.values_list("name", flat=True))


MOVED = BASE.replace(
    "policies:",
    "  otherdb:\n    kind: postgres\n    config: {host: 127.0.0.1, port: 5433, dbname: otherdb}\n    "
    "secret_env: JIT_OTHER_DSN\npolicies:",
).replace("    target: appdb\n", "    target: otherdb\n")


def test_a_profile_with_live_grants_cannot_move_to_another_target(db, write, ana, otto, monkeypatch):
    # Revocation talks to the target a grant was made on; moving the profile under a live
    # grant would send its revocation to a server that never saw the account.
    catalog.apply(write(BASE))
    monkeypatch.setattr(catalog, "_check_scopes_on_targets", lambda *args: [])
    req = lifecycle.submit_request(
        requester=ana,
        profile=AccessProfile.objects.get(name="ro"),
        duration=datetime.timedelta(minutes=30),
        justification=JUSTIFICATION,
    )

    with pytest.raises(catalog.CatalogError) as exc:
        catalog.plan(write(MOVED, name="moved.yaml"))
    [error] = exc.value.errors
    assert (
        "profiles.ro.target: cannot move from appdb to otherdb while it has 0 live grant(s) and 1 pending request(s)"
        in error
    )

    lifecycle.deny_request(req.pk, actor=otto, comment="no")
    assert "~ profile ro: change" in catalog.plan(write(MOVED, name="moved.yaml")).render()
