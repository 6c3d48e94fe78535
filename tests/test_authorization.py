"""Who may do what, as one table: every URL pattern and every API operation, for every persona.

The endpoints come from the URL resolver and from the OpenAPI document the
portal serves: a new page or API operation without a row here fails
`test_every_url_pattern_has_a_row` or `test_every_api_operation_has_a_row`.
Each cell is its own test (`test_endpoint_answers[grants:request_detail-GET-bob-404]`):
it calls the endpoint as the persona and checks

- the status;
- what changed: a call that is not an allowed write leaves every table as
  it was, and the trail gains at most the refusal the lifecycle records;
  an allowed write (`*` after the status) does what the row says and leaves
  its event in the trail;
- what the answer shows: a request's justification only to its requester,
  its approvers, auditors and admins (`READERS`), in pages, errors, JSON and CSV.

Cells:
  200, 403, ...  that status
  login          a redirect to the portal's login page
  admin-login    a redirect to the admin's login page
  <cell>*        an allowed write

Personas (the grants persona set, and who else a table of roles needs):
  anonymous  nobody signed in; for the API, no token
  ana        the requester: her pending request, her live grant, her break-glass use, her token
  bob        another requester (an engineer too); his own pending SSH request
  otto       approver of ana's profiles (db-approvers)
  sven       approver of another profile only (ssh-approvers: bob's)
  audra      auditor as an IdP login makes one: the auditors group, and staff (OIDC_STAFF_GROUPS)
  root       admin (superuser)

The world is built once for the module, through the lifecycle, inside a
transaction rolled back at its end; each cell runs in a savepoint of its own.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from allauth import app_settings as allauth_settings
from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount, SocialApp, SocialToken
from django.apps import apps
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache
from django.db import connection, transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from django_q.models import OrmQ, Schedule, Task

from accounts import tokens
from audit.models import AuditEvent
from grants import lifecycle, reconcile, reviews
from grants.connectors import get_connector
from grants.connectors.ssh import ca as sshca
from grants.models import (
    AccessProfile,
    AccessRequest,
    AccessReview,
    AccessReviewItem,
    BreakGlassReview,
    Delegation,
    DriftFinding,
    EligibilityRemoval,
    Grant,
    OnCallSchedule,
    Policy,
    ReviewSchedule,
    Target,
)
from jitportal.queues import SWEEP_FUNC

PERSONAS = ("anonymous", "ana", "bob", "otto", "sven", "audra", "root")
MINUTES = datetime.timedelta(minutes=1)
DAY = datetime.timedelta(days=1)
JUSTIFICATION = "Look into INC-5150: lock waits on the orders table"
BOB_JUSTIFICATION = "Rotate the deploy keys after the SEC-0815 finding"
NEW_JUSTIFICATION = "Check the deploy host after change CHG-2002"  # what the cells' own new requests say
# Who may read a request's justification: its requester, its approvers, auditors and admins.
READERS = {JUSTIFICATION: {"ana", "otto", "audra", "root"}, BOB_JUSTIFICATION: {"bob", "sven", "audra", "root"}}
METRICS_TOKEN = "metrics-scrape-token-for-the-authorization-table"
SLACK_SECRET = "slack-signing-secret-for-the-authorization-table"
ORPHAN_GRANT_ID = 987_654_321  # a role on the target that no grant explains, for a drift finding


# The world ----------------------------------------------------------------------------------------------------


class World(dict):
    __getattr__ = dict.__getitem__


def _user(username, *groups, **extra):
    user = get_user_model().objects.create_user(username, f"{username}@example.com", "a-password-123", **extra)
    user.groups.add(*groups)
    return user


def _profile(name, target, approvers, **extra):
    profile = AccessProfile.objects.create(
        name=name,
        title=name.replace("-", " "),
        target=target,
        max_duration=240 * MINUTES,
        approver_group=approvers,
        **extra,
    )
    profile.requestable_by.add(Group.objects.get(name="engineers"))
    return profile


def _build_world(pg_cluster) -> World:
    names = ("engineers", "db-approvers", "ssh-approvers")
    groups = {name: Group.objects.get_or_create(name=name)[0] for name in names}
    # The post_migrate hook (grants/apps.py) gives this group its permissions; it has run on the test database.
    groups["auditors"] = Group.objects.get(name=settings.JIT_AUDITOR_GROUP)
    assert groups["auditors"].permissions.filter(codename="view_auditevent").exists()

    marc = _user("marc", groups["engineers"], groups["db-approvers"], first_name="Marc")
    users = {
        "ana": _user("ana", groups["engineers"], first_name="Ana", manager=marc),
        "bob": _user("bob", groups["engineers"], first_name="Bob"),
        "otto": _user("otto", groups["db-approvers"], first_name="Otto"),
        "sven": _user("sven", groups["ssh-approvers"], first_name="Sven"),
        # What accounts.adapter.sync_user_from_claims makes of a member of the IdP's auditors group.
        "audra": _user("audra", groups["auditors"], is_staff="auditors" in settings.OIDC_STAFF_GROUPS),
        "root": get_user_model().objects.create_superuser("root", "root@example.com", "root-password-123"),
    }
    ana, bob, otto = users["ana"], users["bob"], users["otto"]

    appdb = Target.objects.create(
        name="appdb-cluster",
        kind="postgres",
        secret_env="JIT_TEST_PG_DSN",
        config={"host": pg_cluster.host, "port": pg_cluster.port, "dbname": "appdb"},
    )
    hosts = Target.objects.create(name="hosts", kind="ssh", config={}, secret_env="JIT_TEST_AUTHZ_SSH_CA")
    readonly = _profile("appdb-readonly", appdb, groups["db-approvers"], scope={"roles": ["app_readonly"]})
    # Its own profile, so that ana may wait for it while she holds read-only.
    analytics = _profile("appdb-analytics", appdb, groups["db-approvers"], scope={"roles": ["app_readonly"]})
    emergency_policy = Policy.objects.create(
        name="emergency", steps=[{"group": "db-approvers"}], break_glass_groups=["engineers"]
    )
    emergency = _profile("appdb-emergency", appdb, None, scope={"roles": ["app_readonly"]}, policy=emergency_policy)
    ssh_deploy = _profile("ssh-deploy", hosts, groups["ssh-approvers"], scope={"principals": ["deploy"]})
    ssh_logs = _profile("ssh-logs", hosts, groups["ssh-approvers"], scope={"principals": ["logs"]})

    def ask(requester, profile, justification=JUSTIFICATION, **kwargs):
        return lifecycle.submit_request(
            requester=requester,
            profile=profile,
            duration=30 * MINUTES,
            justification=justification,
            ticket="INC-5150",
            **kwargs,
        )

    held_request = ask(ana, readonly)
    lifecycle.approve_request(held_request.pk, actor=otto, comment="ok")
    held = lifecycle.provision_grant(Grant.objects.get(request=held_request).pk)
    pending = ask(ana, analytics)
    review = BreakGlassReview.objects.get(request=ask(ana, emergency, break_glass=True))
    bobs = ask(bob, ssh_logs, BOB_JUSTIFICATION)  # sven's to decide, none of otto's business
    token, _ = tokens.create_token(actor=ana, name="ci", days=30)
    # An access review of read-only: otto and marc review ana, bob and each other.
    campaign = reviews.open_review(actor=users["root"], profiles=[readonly], due_at=timezone.now() + 14 * DAY)
    secrets = {name: tokens.create_token(actor=user, name="authz", days=30)[1] for name, user in users.items()}
    sessions = {}
    for name, user in users.items():
        browser = Client()
        browser.force_login(user)
        sessions[name] = browser.cookies[settings.SESSION_COOKIE_NAME].value

    # A role under the portal's prefix that no grant explains: the reconciler removes it and records a finding.
    with psycopg.connect(pg_cluster.admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE jit_g{ORPHAN_GRANT_ID} LOGIN")
    reconcile.reconcile_target(appdb)

    # Rows of the other apps that the admin shows: theirs to make, so made directly.
    now = timezone.now()
    task = {"func": SWEEP_FUNC, "started": now, "stopped": now}
    social_app = SocialApp.objects.create(provider="openid_connect", provider_id="sample", name="Sample", client_id="x")
    social_account = SocialAccount.objects.create(user=ana, provider="sample", uid="ana-subject", extra_data={})
    return World(
        users=users,
        secrets=secrets,
        sessions=sessions,
        groups=groups,
        marc=marc,
        **users,
        appdb=appdb,
        hosts=hosts,
        readonly=readonly,
        ssh_deploy=ssh_deploy,
        policy=emergency_policy,
        pending=pending,
        bobs=bobs,
        held=held,
        held_request=held_request,
        review=review,
        token=token,
        campaign=campaign,
        review_item=campaign.items.get(person=ana, role="requester"),
        drift=DriftFinding.objects.get(external_ref=f"jit_g{ORPHAN_GRANT_ID}"),
        event=AuditEvent.objects.order_by("-id").first(),
        sweep=Task.objects.create(id=uuid.uuid4().hex, name="sweep-done", success=True, **task),
        failed_task=Task.objects.create(id=uuid.uuid4().hex, name="sweep-failed", success=False, **task),
        queued=OrmQ.objects.create(key=settings.Q_CLUSTER["name"], payload="queued", lock=None),
        schedule=Schedule.objects.create(name="sample", func=SWEEP_FUNC, schedule_type=Schedule.MINUTES, minutes=1),
        email=EmailAddress.objects.create(user=ana, email=ana.email, verified=True, primary=True),
        social_app=social_app,
        social_account=social_account,
        social_token=SocialToken.objects.create(app=social_app, account=social_account, token="sample-token"),
        rotation=OnCallSchedule.objects.create(name="sample-rotation", members=["marc"]),
        # Reinstated already (not in force): a sample row that changes nobody's rights.
        removal=EligibilityRemoval.objects.create(
            person=users["sven"], profile=readonly, role="requester", reinstated_at=now, reinstated_by=users["root"]
        ),
        review_schedule=ReviewSchedule.objects.create(name="sample-reviews", every="year"),
        # One that ended yesterday: a sample row that changes nobody's rights today.
        delegation=Delegation.objects.create(
            delegator=marc,
            delegate=otto,
            starts_at=now - datetime.timedelta(days=2),
            ends_at=now - datetime.timedelta(days=1),
            reason="sample",
        ),
    )


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, pg_cluster):
    """Build the personas and their objects once; roll it all back after the module."""
    ca_dir = Path(tempfile.mkdtemp(prefix="jitportal-authz-"))
    sshca.generate_ca(ca_dir / "ca")
    with pytest.MonkeyPatch.context() as mp, django_db_blocker.unblock():
        mp.setenv("JIT_TEST_PG_DSN", pg_cluster.admin_dsn)
        mp.setenv("JIT_TEST_AUTHZ_SSH_CA", str(ca_dir / "ca"))
        outer = transaction.atomic()
        outer.__enter__()
        built = None
        try:
            built = _build_world(pg_cluster)
            yield built
        finally:
            if built is not None:
                # The rollback forgets the grant, not its role on the target.
                with get_connector(built.appdb) as connector:
                    connector.revoke(built.held)
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)
            shutil.rmtree(ca_dir, ignore_errors=True)


# The table ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    """One endpoint called one way, and what each persona gets."""

    endpoint: str  # namespace:name of the URL pattern (its route if it has no name), or the API's operationId
    method: str  # GET or POST; for the API it comes from the OpenAPI document
    cells: str  # one cell per persona, in PERSONAS order
    args: Callable | None = None  # world -> URL kwargs (for the API: path parameters)
    path: Callable | None = None  # world -> the address, for a pattern without a name
    data: Callable | dict | None = None  # form data (for the API: the JSON body), or world -> it
    query: Callable | dict | None = None  # or world -> it
    before: Callable | None = None  # world -> None, run before the call
    effect: Callable | None = None  # (world, client) -> whether an allowed write did what it says
    audited: str | None = None  # the event an allowed write leaves in the trail
    label: str = ""  # tells two rows of one endpoint and method apart
    api: bool = False

    def expected(self) -> dict[str, str]:
        found = self.cells.split()
        assert len(found) == len(PERSONAS), f"{self.endpoint} {self.method}: {len(found)} cells for {len(PERSONAS)}"
        return dict(zip(PERSONAS, found, strict=True))


def Api(operation, cells, **kwargs) -> Row:
    return Row(operation, "", cells, api=True, **kwargs)


def _caller(client):
    return get_user_model().objects.get(pk=int(client.session["_auth_user_id"]))


def _pending_is(status):
    return lambda w, c: AccessRequest.objects.get(pk=w.pending.pk).status == status


def _held_is(status):
    return lambda w, c: Grant.objects.get(pk=w.held.pk).status == status


def _new_request(w, c):
    return AccessRequest.objects.filter(justification=NEW_JUSTIFICATION).exists()


def _extension_asked(w, c):
    return AccessRequest.objects.filter(extends=w.held).exists()


def _credentials_seen(w, c):
    return Grant.objects.get(pk=w.held.pk).credentials_seen_at is not None


def _request_form(w):
    return {"profile": w.ssh_deploy.pk, "duration": "30m", "justification": NEW_JUSTIFICATION}


def _fresh_sweep(w):
    # No worker runs here: the sweep's task row says one just finished, so /readyz answers
    # for the portal's parts, not for how long the table has been running.
    Task.objects.filter(pk=w.sweep.pk).update(stopped=timezone.now())


PENDING = {"args": lambda w: {"pk": w.pending.pk}}
BOBS = {"args": lambda w: {"pk": w.bobs.pk}, "label": "bobs"}
HELD = {"args": lambda w: {"pk": w.held.pk}}
REVIEW = {"args": lambda w: {"pk": w.review.pk}}
TOKEN = {"args": lambda w: {"pk": w.token.pk}}
ANA = {"args": lambda w: {"username": "ana"}}
CSV = {"label": "csv", "query": {"format": "csv"}, "audited": "report.downloaded"}
CAMPAIGN = {"args": lambda w: {"pk": w.campaign.pk}}


def _ana_removed(w):
    """otto removes ana from requesting read-only in the world's campaign (a reviewer then changes it)."""
    reviews.decide_item(w.review_item.pk, actor=w.otto, decision="remove", comment="Left the on-call rota")


def _ana_removed_and_closed(w):
    """otto removes ana, and root closes the campaign: the removal outlives it (an opener reinstates it)."""
    _ana_removed(w)
    reviews.close_review(w.campaign.pk, actor=w.root)


def _anas_removal(w):
    return EligibilityRemoval.objects.get(item=w.review_item)


def _in_a_month() -> str:
    return (timezone.localtime() + 30 * DAY).strftime("%Y-%m-%d %H:%M")


OIDC = {"args": lambda w: {"provider_id": settings.OIDC_PROVIDER_ID}}

# fmt: off
PORTAL_ROWS = [
    #   endpoint                        method   anonymous ana  bob   otto  sven  audra root
    Row("home",                         "GET",   "302     302   302   302   302   302   302"),
    # The request journey (grants/urls.py).
    Row("grants:my_access",             "GET",   "login   200   200   200   200   200   200"),
    Row("grants:request_new",           "GET",   "login   200   200   200   200   200   200"),
    # Pre-filled from one's own earlier request only.
    Row("grants:request_new",           "GET",   "login   200   200   200   200   200   200", label="again",
        query=lambda w: {"again": w.pending.pk}),
    # Only engineers may ask for the profile; the others get the form back, saying why.
    Row("grants:request_new",           "POST",  "login   302*  302*  200   200   200   200", data=_request_form,
        effect=_new_request, audited="request.submitted"),
    Row("grants:inbox",                 "GET",   "login   200   200   200   200   200   200"),
    Row("grants:targets",               "GET",   "login   403   403   403   403   200   200"),
    # Public: hosts fetch it without an account; it lists revoked serials only.
    Row("grants:ssh_krl",               "GET",   "200     200   200   200   200   200   200",
        args=lambda w: {"target": w.hosts.name}),
    # Hosts' session guards, not people: a report is signed with its host's secret; one that names no
    # host is refused with the reason, whoever's session carries it (grants/tests/test_activity_ssh.py).
    Row("grants:ssh_session_report",    "GET",   "405     405   405   405   405   405   405",
        args=lambda w: {"target": w.hosts.name}),
    Row("grants:ssh_session_report",    "POST",  "400     400   400   400   400   400   400",
        args=lambda w: {"target": w.hosts.name}, data={"serial": "1"}),
    # Who may not see a request gets 404 (no such request looks the same); who may see it but
    # not do this gets 403. The lifecycle records the refused attempt.
    Row("grants:request_detail",        "GET",   "login   200   404   200   404   200   200", **PENDING),
    Row("grants:request_detail",        "GET",   "login   404   200   404   200   200   200", **BOBS),
    # The request page's live status (JSON): exactly who may see the page.
    Row("grants:request_status",        "GET",   "login   200   404   200   404   200   200", **PENDING),
    Row("grants:request_status",        "GET",   "login   404   200   404   200   200   200", **BOBS),
    Row("grants:request_status",        "GET",   "login   200   404   200   404   200   200",
        args=lambda w: {"pk": w.held_request.pk}, label="held"),
    Row("grants:request_status",        "POST",  "login   405   405   405   405   405   405", **PENDING),
    Row("grants:request_decide",        "GET",   "login   405   405   405   405   405   405", **PENDING),
    Row("grants:request_decide",        "POST",  "login   403   404   302*  404   403   403", **PENDING,
        data={"action": "approve", "step": "0"}, effect=_pending_is("approved"), audited="request.approved"),
    Row("grants:request_decide",        "POST",  "login   404   403   404   302*  403   403", **BOBS,
        data={"action": "deny", "step": "0"}, audited="request.denied",
        effect=lambda w, c: AccessRequest.objects.get(pk=w.bobs.pk).status == "denied"),
    # A form that does not make sense tells viewers what to fix, and others nothing, not even that it exists.
    Row("grants:request_decide",        "POST",  "login   302   404   302   404   302   302", **PENDING,
        data={"action": "maybe"}, label="bad_form"),
    Row("grants:request_cancel",        "GET",   "login   405   405   405   405   405   405", **PENDING),
    Row("grants:request_cancel",        "POST",  "login   302*  404   403   404   403   403", **PENDING,
        effect=_pending_is("cancelled"), audited="request.cancelled"),
    Row("grants:grant_detail",          "GET",   "login   200   404   200   404   200   200", **HELD),
    Row("grants:grant_credentials",     "GET",   "login   405   405   405   405   405   405", **HELD),
    Row("grants:grant_credentials",     "POST",  "login   200*  404   403   404   403   403", **HELD,
        effect=_credentials_seen, audited="grant.credentials_viewed"),
    Row("grants:grant_release",         "GET",   "login   405   405   405   405   405   405", **HELD),
    # Releasing is the holder's; an admin revokes in the admin (revoke_selected below).
    Row("grants:grant_release",         "POST",  "login   302*  404   403   404   403   403", **HELD,
        effect=_held_is("revoking"), audited="grant.revoke_requested"),
    Row("grants:grant_extend",          "GET",   "login   405   405   405   405   405   405", **HELD),
    Row("grants:grant_extend",          "POST",  "login   302*  404   403   404   403   403", **HELD,
        data={"duration": "30m", "justification": NEW_JUSTIFICATION}, effect=_extension_asked,
        audited="request.submitted"),
    Row("grants:reviews",               "GET",   "login   200   200   200   200   200   200"),
    # Carries out what waited for a step-up in this session; with nothing waiting, back to one's access.
    Row("grants:step_up_resume",        "GET",   "login   302   302   302   302   302   302",
        args=lambda w: {"key": "nothing-waits-under-this-key"}),
    Row("grants:step_up_resume",        "POST",  "login   405   405   405   405   405   405",
        args=lambda w: {"key": "nothing-waits-under-this-key"}),
    Row("grants:delegations",           "GET",   "login   200   200   200   200   200   200"),
    # Anyone may name a delegate of their own; a bad form comes back with the reason.
    Row("grants:delegations",           "POST",  "login   200   200   200   200   200   200",
        data={"delegate": "nosuch"}, label="bad_form"),
    Row("grants:delegation_end",        "GET",   "login   405   405   405   405   405   405", args=lambda w: {"pk": 1}),
    # Only the delegator ends a delegation: for everyone else it does not exist.
    Row("grants:delegation_end",        "POST",  "login   404   404   404   404   404   404",
        args=lambda w: {"pk": 999999}),
    Row("grants:review_close",          "GET",   "login   405   405   405   405   405   405", **REVIEW),
    Row("grants:review_close",          "POST",  "login   403   404   302*  404   403   403", **REVIEW,
        data={"comment": "Checked the incident ticket and the session log."},
        effect=lambda w, c: BreakGlassReview.objects.get(pk=w.review.pk).closed_at, audited="review.closed"),
    Row("grants:review_close",          "POST",  "login   302   404   302   404   302   302", **REVIEW,
        data={"comment": "x" * 2001}, label="bad_form"),
    # Reports (audit/urls.py): auditors and admins see everything, approvers their decisions, everyone
    # their own history; a CSV download is recorded.
    Row("audit:index",                  "GET",   "login   200   200   200   200   200   200"),
    Row("audit:overview",               "GET",   "login   403   403   403   403   200   200"),
    Row("audit:overview",               "GET",   "login   403   403   403   403   200   200", label="year",
        query={"since": "2025-12-02", "until": "2026-12-01"}),
    Row("audit:access",                 "GET",   "login   200   200   200   200   200   200"),
    Row("audit:access",                 "GET",   "login   200*  200*  200*  200*  200*  200*", **CSV),
    # Asking for someone else's history gets one's own (the filter is not offered).
    Row("audit:access",                 "GET",   "login   200*  200*  200*  200*  200*  200*", label="csv-ana",
        query={"format": "csv", "user": "ana"}, audited="report.downloaded"),
    Row("audit:current",                "GET",   "login   403   403   403   403   200   200"),
    Row("audit:current",                "GET",   "login   403   403   403   403   200*  200*", **CSV),
    Row("audit:decisions",              "GET",   "login   403   403   200   200   200   200"),
    Row("audit:decisions",              "GET",   "login   403   403   200*  200*  200*  200*", **CSV),
    # An approver's decisions are his own, whoever he names.
    Row("audit:decisions",              "GET",   "login   403   403   200   200   200   200", label="otto",
        query={"approver": "otto", "since": "2000-01-01"}),
    Row("audit:break_glass",            "GET",   "login   403   403   403   403   200   200"),
    Row("audit:break_glass",            "GET",   "login   403   403   403   403   200*  200*", **CSV),
    Row("audit:timeline_lookup",        "GET",   "login   302   302   302   302   302   302"),
    Row("audit:timeline",               "GET",   "login   200   403   403   403   200   200", **ANA),
    Row("audit:timeline",               "GET",   "login   200*  403   403   403   200*  200*", **ANA, **CSV),
    # Access reviews (reports/reviews.py): everyone sees the campaigns they review; auditors and admins open
    # them and see all; an item's reviewers (otto and marc for ana) decide, never the person herself.
    Row("audit:reviews",                "GET",   "login   200   200   200   200   200   200"),
    Row("audit:reviews",                "POST",  "login   403   403   403   403   302*  302*",
        data=lambda w: {"profiles": [w.readonly.pk], "due_at": _in_a_month(), "undecided": "remove",
                        "period_days": "90", "title": "Yearly"},
        effect=lambda w, c: AccessReview.objects.filter(title="Yearly").exists(), audited="access_review.opened"),
    Row("audit:review",                 "GET",   "login   403   403   200   403   200   200", **CAMPAIGN),
    Row("audit:review_items",           "GET",   "login   403   403   200   403   200   200", **CAMPAIGN),
    Row("audit:review_items",           "POST",  "login   403   403   302*  403   403   403", **CAMPAIGN,
        data=lambda w: {"item": w.review_item.pk, "decision": "keep", "comment": "Still on call for it"},
        effect=lambda w, c: AccessReviewItem.objects.get(pk=w.review_item.pk).decision == "keep",
        audited="access_review.decided"),
    Row("audit:review_evidence",        "GET",   "login   403   403   403   403   200*  200*", **CAMPAIGN,
        audited="report.downloaded"),
    # A reviewer changes a decision (remove to keep lifts the removal); openers close a campaign early and
    # reinstate a removal once its campaign closed.
    Row("audit:review_items",           "POST",  "login   403   403   302*  403   403   403", **CAMPAIGN,
        label="change", before=_ana_removed,
        data=lambda w: {"item": w.review_item.pk, "decision": "keep", "comment": "Back on the rota"},
        effect=lambda w, c: not _anas_removal(w).in_force, audited="eligibility.reinstated"),
    Row("audit:review_close",           "GET",   "login   405   405   405   405   405   405", **CAMPAIGN),
    Row("audit:review_close",           "POST",  "login   403   403   403   403   302*  302*", **CAMPAIGN,
        data={"confirm": "on"}, effect=lambda w, c: not AccessReview.objects.get(pk=w.campaign.pk).is_open,
        audited="access_review.closed"),
    Row("audit:removal_reinstate",      "GET",   "login   405   405   405   405   405   405",
        args=lambda w: {"pk": w.removal.pk}),
    Row("audit:removal_reinstate",      "POST",  "login   403   403   403   403   302*  302*",
        before=_ana_removed_and_closed, args=lambda w: {"pk": _anas_removal(w).pk},
        data={"reason": "Rejoined the rota"}, effect=lambda w, c: not _anas_removal(w).in_force,
        audited="eligibility.reinstated"),
    # What one grant's target kept of its use, as CSV: auditors only; the download is recorded.
    Row("audit:grant_activity",         "GET",   "login   403   403   403   403   200*  200*", **HELD,
        audited="report.downloaded"),
    # One's own settings (accounts/urls.py).
    Row("accounts:tokens",              "GET",   "login   200   200   200   200   200   200"),
    Row("accounts:tokens",              "POST",  "login   200*  200*  200*  200*  200*  200*",
        data={"name": "laptop", "days": "7"}, audited="token.created",
        effect=lambda w, c: tokens.own_tokens(_caller(c)).filter(name="laptop").exists()),
    Row("accounts:token_revoke",        "GET",   "login   405   405   405   405   405   405", **TOKEN),
    Row("accounts:token_revoke",        "POST",  "login   302*  404   404   404   404   404", **TOKEN,
        effect=lambda w, c: tokens.own_tokens(w.ana).get(pk=w.token.pk).revoked_at, audited="token.revoked"),
    # The password step-up (no IdP here): each confirms their own password; root's is another one.
    Row("accounts:step_up",             "GET",   "login   200   200   200   200   200   200"),
    Row("accounts:step_up",             "POST",  "login   302*  302*  302*  302*  302*  200",
        data={"password": "a-password-123", "next": "/access/"}, audited="user.step_up",
        effect=lambda w, c: c.session.get("jit_step_up", {}).get("user") == _caller(c).pk),
    Row("accounts:notifications",       "GET",   "login   200   200   200   200   200   200"),
    Row("accounts:notifications",       "POST",  "login   302*  302*  302*  302*  302*  302*", data={"email": "on"},
        effect=lambda w, c: _caller(c).notification_preference.slack is False),
    # The person's time zone is a cookie: no table changes.
    Row("accounts:time_zone",           "GET",   "login   405   405   405   405   405   405"),
    Row("accounts:time_zone",           "POST",  "login   302   302   302   302   302   302",
        data={"time_zone": "Europe/Paris"}),
    Row("accounts:time_zone",           "POST",  "login   302   302   302   302   302   302",
        data={"time_zone": "Mars/Olympus"}, label="bad"),
    # Machine endpoints (jitportal/urls.py): a session neither opens nor closes them.
    Row("healthz",                      "GET",   "200     200   200   200   200   200   200"),
    Row("readyz",                       "GET",   "200     200   200   200   200   200   200", before=_fresh_sweep),
    Row("metrics",                      "GET",   "401     401   401   401   401   401   401"),
    Row("slack_interactions",           "GET",   "405     405   405   405   405   405   405"),
    Row("slack_interactions",           "POST",  "403     403   403   403   403   403   403", data={"payload": "{}"}),
    Row("api-v1:openapi-json",          "GET",   "200     200   200   200   200   200   200"),
    Row("api-v1:api-root",              "GET",   "404     404   404   404   404   404   404"),
]

# allauth's sign-in pages; with an IdP (SOCIALACCOUNT_ONLY) the local-account ones do not exist.
ALLAUTH_ROWS = [
    #   endpoint                        method   anonymous ana  bob   otto  sven  audra root
    Row("account_login",                "GET",   "200     302   302   302   302   302   302"),
    Row("account_logout",               "GET",   "302     200   200   200   200   200   200"),
    Row("account_logout",               "POST",  "302     302*  302*  302*  302*  302*  302*",
        effect=lambda w, c: "_auth_user_id" not in c.session),
    Row("account_inactive",             "GET",   "200     200   200   200   200   200   200"),
    Row("socialaccount_login_cancelled", "GET",  "200     200   200   200   200   200   200"),
    Row("socialaccount_login_error",    "GET",   "401     401   401   401   401   401   401"),
    Row("socialaccount_signup",         "GET",   "302     302   302   302   302   302   302"),
    Row("socialaccount_connections",    "GET",   "login   200   200   200   200   200   200"),
    Row("openid_connect_login",         "GET",   "404     404   404   404   404   404   404", **OIDC),
    Row("openid_connect_callback",      "GET",   "404     404   404   404   404   404   404", **OIDC),
    *(
        Row(f"accounts/social/{old}/",  "GET",   "301     301   301   301   301   301   301",
            path=lambda w, old=old: f"/accounts/social/{old}/")
        for old in ("login/cancelled", "login/error", "signup", "connections")
    ),
]
LOCAL_ACCOUNT_ROWS = [
    Row("account_signup",               "GET",   "200     302   302   302   302   302   302"),
    Row("account_reauthenticate",       "GET",   "login   200   200   200   200   200   200"),
    # A code goes to a verified address: only ana has one; the others are sent back.
    Row("account_request_reauthentication_code", "GET", "login 200 302 302  302   302   302"),
    Row("account_confirm_reauthentication_code", "GET", "login 302 302 302  302   302   302"),
    # allauth copies the account's address into its own table on the first look (ana's is there).
    Row("account_email",                "GET",   "login   200   200*  200*  200*  200*  200*",
        effect=lambda w, c: EmailAddress.objects.filter(user=_caller(c)).exists()),
    Row("account_email_verification_sent", "GET", "200    200   200   200   200   200   200"),
    Row("account_change_password",      "GET",   "login   200   200   200   200   200   200"),
    Row("account_set_password",         "GET",   "login   302   302   302   302   302   302"),
    Row("account_reset_password",       "GET",   "200     200   200   200   200   200   200"),
    Row("account_confirm_login_code",   "GET",   "302     302   302   302   302   302   302"),
    Row("account_confirm_email",        "GET",   "200     200   200   200   200   200   200",
        args=lambda w: {"key": "no-such-key"}),
    Row("account_reset_password_from_key", "GET", "200    200   200   200   200   200   200",
        args=lambda w: {"uidb36": "1", "key": "no-such-key"}),
    Row("account_reset_password_from_key_done", "GET", "200 200 200   200   200   200   200"),
    Row("account_reset_password_done",  "GET",   "200     200   200   200   200   200   200"),
]

# The JSON API (api/views.py), by operationId.
ON_PENDING = {"args": lambda w: {"request_id": w.pending.pk}}
ON_HELD = {"args": lambda w: {"request_id": w.held_request.pk}}
API_ROWS = [
    #   operationId                              anonymous ana  bob   otto  sven  audra root
    Api("list_profiles",                         "401     200   200   200   200   200   200"),
    Api("list_requests",                         "401     200   200   200   200   200   200"),
    Api("create_request",                        "401     201*  201*  403   403   403   403",
        data={"profile": "ssh-deploy", "duration_seconds": 1800, "justification": NEW_JUSTIFICATION},
        effect=_new_request, audited="request.submitted"),
    Api("get_request",                           "401     200   404   200   404   200   200", **ON_PENDING),
    Api("get_request",                           "401     404   200   404   200   200   200", label="bobs",
        args=lambda w: {"request_id": w.bobs.pk}),
    Api("inbox",                                 "401     200   200   200   200   200   200"),
    Api("approve",                               "401     403   404   200*  404   403   403", **ON_PENDING,
        data={"comment": "fine"}, effect=_pending_is("approved"), audited="request.approved"),
    Api("approve",                               "401     404   403   404   200*  403   403", label="bobs",
        args=lambda w: {"request_id": w.bobs.pk}, audited="request.approved",
        effect=lambda w, c: AccessRequest.objects.get(pk=w.bobs.pk).status == "approved"),
    Api("deny",                                  "401     403   404   200*  404   403   403", **ON_PENDING,
        data={"comment": "no"}, effect=_pending_is("denied"), audited="request.denied"),
    Api("cancel",                                "401     200*  404   403   404   403   403", **ON_PENDING,
        effect=_pending_is("cancelled"), audited="request.cancelled"),
    Api("release",                               "401     200*  404   403   404   403   403", **ON_HELD,
        effect=_held_is("revoking"), audited="grant.revoke_requested"),
    Api("extend",                                "401     201*  404   403   404   403   403", **ON_HELD,
        data={"duration_seconds": 1800, "justification": NEW_JUSTIFICATION}, effect=_extension_asked,
        audited="request.submitted"),
    Api("credentials",                           "401     200*  404   403   404   403   403", **ON_HELD,
        effect=_credentials_seen, audited="grant.credentials_viewed"),
    Api("list_delegations",                      "401     200   200   200   200   200   200"),
    # Everyone may name a delegate of their own (here: a deactivated or unknown name is refused with the reason).
    Api("create_delegation",                     "401     400   400   400   400   400   400",
        data={"delegate": "nosuch", "starts_at": "2030-01-01T09:00:00Z", "ends_at": "2030-01-02T09:00:00Z"}),
    # Only the delegator ends a delegation: for everyone else it does not exist.
    Api("end_delegation",                        "401     404   404   404   404   404   404",
        args=lambda w: {"delegation_id": 999999}),
    # Access reviews: a campaign exists for its reviewers (otto) and auditors; only a reviewer decides an item.
    Api("list_reviews",                          "401     200   200   200   200   200   200"),
    Api("list_review_items",                     "401     404   404   200   404   200   200",
        args=lambda w: {"review_id": w.campaign.pk}),
    Api("decide_review_item",                    "401     404   404   200*  404   403   403",
        args=lambda w: {"item_id": w.review_item.pk}, data={"decision": "keep", "comment": "Still on call for it"},
        effect=lambda w, c: AccessReviewItem.objects.get(pk=w.review_item.pk).decision == "keep",
        audited="access_review.decided"),
    Api("decide_review_item",                    "401     404   404   200*  404   403   403", label="change",
        args=lambda w: {"item_id": w.review_item.pk}, data={"decision": "keep", "comment": "Back on the rota"},
        before=_ana_removed, effect=lambda w, c: not _anas_removal(w).in_force, audited="eligibility.reinstated"),
    # Openers close a campaign early (otto reviews in it, so it exists for him) and reinstate removals.
    Api("close_review",                          "401     404   404   403   404   200*  200*",
        args=lambda w: {"review_id": w.campaign.pk},
        effect=lambda w, c: not AccessReview.objects.get(pk=w.campaign.pk).is_open, audited="access_review.closed"),
    Api("list_removals",                         "401     200   200   200   200   200   200"),
    Api("reinstate_removal",                     "401     404   404   404   404   200*  200*",
        before=_ana_removed_and_closed, args=lambda w: {"removal_id": _anas_removal(w).pk},
        data={"reason": "Rejoined the rota"}, effect=lambda w, c: not _anas_removal(w).in_force,
        audited="eligibility.reinstated"),
]
# fmt: on

# The Django admin. Every registered model has the same pages; per model: whether the auditor may view it,
# whether an admin may add one, and whether an admin may delete the sample (the world's object named here).
ADMIN_MODELS = {
    "auth.group": (False, True, True, "groups.engineers"),
    "account.emailaddress": (False, True, True, "email"),
    "socialaccount.socialapp": (False, True, True, "social_app"),
    "socialaccount.socialtoken": (False, True, True, "social_token"),
    "socialaccount.socialaccount": (False, True, True, "social_account"),
    "django_q.schedule": (False, True, True, "schedule"),
    "django_q.success": (False, False, True, "sweep"),
    "django_q.failure": (False, False, True, "failed_task"),
    "django_q.ormq": (False, False, True, "queued"),
    "audit.auditevent": (True, False, False, "event"),  # the trail: read-only for everyone
    "accounts.user": (True, True, True, "ana"),
    "accounts.apitoken": (False, False, False, "token"),  # made and revoked by their owners only
    "grants.target": (True, True, True, "appdb"),
    "grants.policy": (False, True, True, "policy"),
    "grants.accessprofile": (True, True, True, "readonly"),
    "grants.accessrequest": (True, False, False, "pending"),  # statuses belong to the lifecycle
    "grants.grant": (True, False, False, "held"),
    "grants.driftfinding": (False, False, False, "drift"),
    "grants.oncallschedule": (False, True, True, "rotation"),
    "grants.delegation": (False, False, False, "delegation"),  # named and ended by the approver (pages, API)
    # Access reviews: decided, closed and reinstated through the portal (audited); the admin only shows them.
    "grants.accessreview": (True, False, False, "campaign"),
    "grants.accessreviewitem": (True, False, False, "review_item"),
    "grants.eligibilityremoval": (True, False, False, "removal"),
    "grants.reviewschedule": (True, False, False, "review_schedule"),
}
# The admin sends whoever is not staff to its login page: the first five personas' cells of most rows.
NOT_STAFF = "admin-login " * 5


def _sample(world, label: str):
    obj = world
    for part in ADMIN_MODELS[label][3].split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def _admin_model_rows() -> list[Row]:
    rows = []
    for label, (auditor_views, admin_adds, admin_deletes, _) in ADMIN_MODELS.items():
        name, folder = label.replace(".", "_"), label.replace(".", "/")
        sample = {"args": lambda w, label=label: {"object_id": _sample(w, label).pk}}
        view = "200" if auditor_views else "403"
        rows += [
            Row(f"admin:{name}_changelist", "GET", f"{NOT_STAFF} {view} 200"),
            Row(f"admin:{name}_add", "GET", f"{NOT_STAFF} 403 {200 if admin_adds else 403}"),
            Row(f"admin:{name}_change", "GET", f"{NOT_STAFF} {view} 200", **sample),
            Row(f"admin:{name}_history", "GET", f"{NOT_STAFF} {view} 200", **sample),
            Row(f"admin:{name}_delete", "GET", f"{NOT_STAFF} 403 {200 if admin_deletes else 403}", **sample),
            # The object's bare address redirects to its change page.
            Row(
                f"admin/{folder}/<path:object_id>/",
                "GET",
                f"{NOT_STAFF} 302 302",
                path=lambda w, label=label, folder=folder: f"/admin/{folder}/{_sample(w, label).pk}/",
            ),
        ]
    return rows


def _ana_made_superuser(w):
    """The admin's change form for ana, submitted with is_staff and is_superuser ticked."""
    return {
        "username": "ana",
        "first_name": "Ana",
        "last_name": "",
        "email": "ana@example.com",
        "is_active": "on",
        "is_staff": "on",
        "is_superuser": "on",
        "groups": [w.groups["engineers"].pk],
        "manager": w.marc.pk,
        "date_joined_0": "2024-01-01",
        "date_joined_1": "00:00:00",
        "last_login_0": "",
        "last_login_1": "",
    }


# fmt: off
ADMIN_ROWS = [
    *_admin_model_rows(),
    #   endpoint                        method   anonymous ana bob otto sven  audra root
    Row("admin:index",                  "GET",   f"{NOT_STAFF}                 200   200"),
    Row("admin:login",                  "GET",   "200 200 200 200 200          302   302"),
    # Who is not staff is sent to the admin's index, and from there to its login.
    Row("admin:logout",                 "GET",   "302 302 302 302 302          405   405"),
    Row("admin:password_change",        "GET",   f"{NOT_STAFF}                 200   200"),
    Row("admin:password_change_done",   "GET",   f"{NOT_STAFF}                 200   200"),
    Row("admin:jsi18n",                 "GET",   f"{NOT_STAFF}                 200   200"),
    # Finds users for the manager field, for whoever may view users.
    Row("admin:autocomplete",           "GET",   f"{NOT_STAFF}                 200   200",
        query={"app_label": "accounts", "model_name": "user", "field_name": "manager", "term": "a"}),
    # Our models have no "view on site" address.
    Row("admin:view_on_site",           "GET",   f"{NOT_STAFF}                 404   404",
        args=lambda w: {"content_type_id": ContentType.objects.get_for_model(Grant).pk, "object_id": w.held.pk}),
    Row("admin:app_list",               "GET",   f"{NOT_STAFF}                 200   200",
        args=lambda w: {"app_label": "grants"}),
    Row("admin:app_list",               "GET",   f"{NOT_STAFF}                 404   200",
        args=lambda w: {"app_label": "auth"}, label="auth"),
    Row("admin:auth_user_password_change", "GET", f"{NOT_STAFF}                403   200",
        args=lambda w: {"id": w.ana.pk}),
    # Its catch-all hides from outsiders which addresses exist.
    Row("admin/(?P<url>.*)$",           "GET",   f"{NOT_STAFF}                 404   404",
        path=lambda w: "/admin/no-such-page/"),
    # Writes that would matter: making someone an admin, revoking, the trail, tokens, the catalog, groups.
    Row("admin:accounts_user_change",   "POST",  f"{NOT_STAFF}                 403   302*",
        args=lambda w: {"object_id": w.ana.pk}, data=_ana_made_superuser, label="make_superuser",
        effect=lambda w, c: get_user_model().objects.get(pk=w.ana.pk).is_superuser),
    # Without the change permission the action is not offered: the list comes back, "No action selected".
    Row("admin:grants_grant_changelist", "POST", f"{NOT_STAFF}                 200   302*", label="revoke_selected",
        data=lambda w: {"action": "revoke_selected", "_selected_action": [w.held.pk], "index": "0"},
        effect=_held_is("revoking"), audited="grant.revoke_requested"),
    # Checking connects to the target with the portal's admin credentials and records its health: not an
    # auditor's to start.
    Row("admin:grants_target_changelist", "POST", f"{NOT_STAFF}                200   302*", label="check_now",
        data=lambda w: {"action": "check_now", "_selected_action": [w.appdb.pk], "index": "0"},
        effect=lambda w, c: Target.objects.get(pk=w.appdb.pk).checked_at is not None),
    # Every field of a grant is read-only in the admin: the save goes through and changes nothing.
    Row("admin:grants_grant_change",    "POST",  f"{NOT_STAFF}                 403   302", label="move_expiry",
        args=lambda w: {"object_id": w.held.pk},
        data={"status": "active", "expires_at_0": "2099-01-01", "expires_at_1": "00:00"}),
    Row("admin:audit_auditevent_delete", "POST", f"{NOT_STAFF}                 403   403",
        args=lambda w: {"object_id": w.event.pk}, data={"post": "yes"}),
    Row("admin:accounts_apitoken_delete", "POST", f"{NOT_STAFF}                403   403",
        args=lambda w: {"object_id": w.token.pk}, data={"post": "yes"}),
    Row("admin:grants_target_add",      "POST",  f"{NOT_STAFF}                 403   302*",
        data={"name": "newdb", "kind": "postgres", "config": "{}", "secret_env": "NEWDB_DSN"},
        effect=lambda w, c: Target.objects.filter(name="newdb").exists()),
    Row("admin:auth_group_add",         "POST",  f"{NOT_STAFF}                 403   302*",
        data=lambda w: {"name": "new-admins", "permissions": [Permission.objects.get(codename="change_grant").pk]},
        effect=lambda w, c: Group.objects.filter(name="new-admins").exists()),
]
# fmt: on

LOCAL_ACCOUNTS = not allauth_settings.SOCIALACCOUNT_ONLY
ROWS = PORTAL_ROWS + ALLAUTH_ROWS + (LOCAL_ACCOUNT_ROWS if LOCAL_ACCOUNTS else []) + ADMIN_ROWS + API_ROWS

# URL patterns that get no row, each with the reason. Everything can be called meaningfully today.
EXCLUDED: dict[str, str] = {}


# Every endpoint has a row -------------------------------------------------------------------------------------


def url_patterns(resolver=None, prefix="", namespace=None):
    """Yield the key of every URL pattern: its namespace:name, or its route when it has no name."""
    for pattern in (resolver or get_resolver()).url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            inner = ":".join(filter(None, [namespace, pattern.namespace])) or None
            yield from url_patterns(pattern, route, inner)
        elif isinstance(pattern, URLPattern):
            yield (f"{namespace}:{pattern.name}" if namespace else pattern.name) if pattern.name else route


def api_operations(client) -> dict[str, tuple[str, str]]:
    """Return {operationId: (method, path)} from the OpenAPI document the portal serves."""
    response = client.get(reverse("api-v1:openapi-json"))
    assert response.status_code == 200
    return {
        operation["operationId"]: (method.upper(), path)
        for path, methods in response.json()["paths"].items()
        for method, operation in methods.items()
    }


def test_every_url_pattern_has_a_row():
    found = set(url_patterns())
    rows = {r.endpoint for r in ROWS if not r.api} | {f"api-v1:{r.endpoint}" for r in ROWS if r.api}
    missing = found - rows - set(EXCLUDED)
    assert not missing, f"URL patterns without a row here (add one, a cell per persona): {sorted(missing)}"
    gone = (rows | set(EXCLUDED)) - found
    assert not gone, f"Rows for URL patterns that are gone: {sorted(gone)}"


def test_every_api_operation_has_a_row(client):
    operations = set(api_operations(client))
    rows = {r.endpoint for r in ROWS if r.api}
    assert not operations - rows, f"API operations without a row here: {sorted(operations - rows)}"
    assert not rows - operations, f"Rows for API operations that are gone: {sorted(rows - operations)}"


def test_every_model_in_the_admin_has_a_row():
    registered, rows = {model._meta.label_lower for model in admin.site._registry}, set(ADMIN_MODELS)
    assert not registered - rows, f"Admin models without a row in ADMIN_MODELS: {sorted(registered - rows)}"
    assert not rows - registered, f"Rows for models gone from the admin: {sorted(rows - registered)}"


# The cells ----------------------------------------------------------------------------------------------------

# What the trail may gain from a call that changes nothing: the lifecycle records refused attempts.
REFUSED = re.compile(r"\.\w*refused$")
# Columns that change by merely using the portal, not by what a call asked for.
VOLATILE = {"accounts.user": {"last_login"}, "accounts.apitoken": {"last_used_at"}}
UNWATCHED = {"sessions.session", "audit.auditevent", "admin.logentry"}


def _watched():
    for model in apps.get_models(include_auto_created=True):
        label = model._meta.label_lower
        if not model._meta.proxy and label not in UNWATCHED:
            yield label, model, [f for f in model._meta.concrete_fields if f.name not in VOLATILE.get(label, ())]


def _digest_query() -> str:
    """Return one query giving a digest of every watched table: a round trip per table made the table slow."""
    quote = connection.ops.quote_name
    return " UNION ALL ".join(
        f"SELECT '{label}', md5(coalesce(string_agg(ROW({', '.join(quote(f.column) for f in fields)})::text, '|'"
        f" ORDER BY {quote(model._meta.pk.column)}), '')) FROM {quote(model._meta.db_table)}"
        for label, model, fields in _watched()
    )


def state() -> dict[str, object]:
    """Return what every table holds (but sessions, the trail and the admin's log), for comparison."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_digest_query())
            return dict(cursor.fetchall())
    return {
        label: list(model._base_manager.order_by("pk").values_list(*[f.attname for f in fields]))
        for label, model, fields in _watched()
    }


@pytest.fixture(scope="module")
def operations():
    return api_operations(Client())


@pytest.fixture
def machine_secrets(settings):
    settings.METRICS_TOKEN = METRICS_TOKEN
    settings.SLACK_SIGNING_SECRET = SLACK_SECRET


@pytest.fixture
def fresh_rate_limits():
    # The API's counters live in the local-memory cache, which outlives a test's transaction.
    cache.clear()
    yield
    cache.clear()


def _browser(world, persona, **kwargs) -> Client:
    client = Client(**kwargs)
    if persona != "anonymous":
        client.cookies[settings.SESSION_COOKIE_NAME] = world.sessions[persona]
    return client


def _call(client, row, world, operations, token):
    args = row.args(world) if row.args else {}
    data = row.data(world) if callable(row.data) else row.data
    if row.api:
        method, url = operations[row.endpoint]
        for name, value in args.items():
            url = url.replace("{" + name + "}", str(value))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = json.dumps(data) if data is not None else ""
        return client.generic(method, url, body, content_type="application/json", headers=headers)
    url = row.path(world) if row.path else reverse(row.endpoint, kwargs=args)
    if row.method == "GET":
        return client.get(url, (row.query(world) if callable(row.query) else row.query) or {})
    return client.post(url, data or {})


def _check(row, persona, expected, world, client, operations, *, token=None):
    """Call the endpoint as `client` and check the status, what changed, the trail and what the answer shows."""
    if row.before:
        row.before(world)
    before, last_event = state(), AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0

    response = _call(client, row, world, operations, token)
    # A streamed CSV is made while it is read.
    body = b"".join(response.streaming_content) if response.streaming else response.content

    where = f"{row.method or 'API'} {row.endpoint} as {persona}"
    status, allowed = expected.rstrip("*"), expected.endswith("*")
    if status in ("login", "admin-login"):
        login = reverse("account_login" if status == "login" else "admin:login")
        assert response.status_code == 302 and response["Location"].startswith(login), (
            f"{where}: expected a redirect to {login}, got {response.status_code} {response.get('Location', '')}"
        )
    else:
        assert response.status_code == int(status), f"{where}: expected {status}, got {response.status_code}"
    for text, readers in READERS.items():
        assert persona in readers or text.encode() not in body, f"{where}: the answer shows {text!r}"
    events = list(AuditEvent.objects.filter(id__gt=last_event).values_list("action", flat=True))
    if allowed:
        assert row.effect is None or row.effect(world, client), f"{where}: answered {response.status_code}, did nothing"
        assert row.audited is None or row.audited in events, f"{where}: no {row.audited!r} in the trail, only {events}"
    else:
        after = state()
        changed = sorted(label for label in before if before[label] != after[label])
        assert not changed, f"{where}: answered {response.status_code} and changed {changed}"
        recorded = [action for action in events if not REFUSED.search(action)]
        assert not recorded, f"{where}: answered {response.status_code} and recorded {recorded}"


def _cells():
    for row in ROWS:
        name = f"{row.endpoint}:{row.label}" if row.label else row.endpoint
        for persona, expected in row.expected().items():
            yield pytest.param(row, persona, expected, id=f"{name}-{row.method or 'API'}-{persona}-{expected}")


@pytest.mark.parametrize(("row", "persona", "expected"), list(_cells()))
def test_endpoint_answers(row, persona, expected, world, operations, db, machine_secrets, fresh_rate_limits):
    if row.api:
        # The API takes tokens only; a session does not count.
        _check(row, persona, expected, world, Client(), operations, token=world.secrets.get(persona))
    else:
        _check(row, persona, expected, world, _browser(world, persona), operations)


@pytest.mark.parametrize("row", [pytest.param(r, id=r.endpoint) for r in API_ROWS])
def test_a_signed_in_browser_without_a_token_gets_nothing_from_the_api(row, world, operations, db, fresh_rate_limits):
    # Or a page of another site could make ana's browser call the API as her.
    _check(row, "anonymous", "401", world, _browser(world, "ana"), operations)


# Slack's endpoint and the SSH guards' session reports have no CSRF token to check (they are signed
# instead), and are refused above without a signature.
SIGNED_INSTEAD = {"slack_interactions", "grants:ssh_session_report"}
CROSS_SITE = [r for r in ROWS if r.method == "POST" and r.endpoint not in SIGNED_INSTEAD]


@pytest.mark.parametrize("row", [pytest.param(r, id=":".join(filter(None, [r.endpoint, r.label]))) for r in CROSS_SITE])
def test_a_form_posted_from_another_site_is_refused(row, world, operations, db, fresh_rate_limits):
    # As the persona who may do the most with the form: her browser sends her cookie, but no CSRF token.
    persona = next((p for p, cell in row.expected().items() if cell.endswith("*")), "root")
    _check(row, persona, "403", world, _browser(world, persona, enforce_csrf_checks=True), operations)
