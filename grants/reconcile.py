"""Prove that nothing on a target is left that no grant explains.

For each target the reconciler asks the connector what exists under the
portal's prefix (`list_managed()`), compares it with the grants that should
exist, removes what nothing explains, re-revokes what should be gone, and
records every finding as a drift event. It runs on a schedule and is safe
beside provisioning and revocation: a grant that a worker holds locked is
skipped, never judged halfway.
"""

from __future__ import annotations

import logging
import re
import types

from django.db import transaction
from django.utils import timezone

import audit

from . import events
from .connectors import ConnectorError, get_connector
from .models import DriftFinding, Grant, Target

log = logging.getLogger(__name__)
_GRANT_ID = re.compile(r"(\d+)$")
GS = Grant.Status


def _stub(grant_id: int):
    # Something on the target with our naming but no grant row: the
    # connector needs only the id (names derive from it) to remove it.
    return types.SimpleNamespace(pk=grant_id, scope={}, expires_at=None, starts_at=None, params={})


def _finding(target, ref, kind, *, grant=None, action="", objects=None):
    finding = DriftFinding.objects.create(
        target=target,
        external_ref=ref,
        grant=grant,
        kind=kind,
        action=action,
        resolved_at=timezone.now() if action.startswith("removed") else None,
    )
    details = {
        "target": target.name,
        "external_ref": ref,
        "kind": kind,
        "grant": grant.pk if grant else None,
        "action": action,
    }
    if objects:
        details["objects"] = objects  # what the account had made or granted, and what removing it did with each
    audit.record("drift.found", obj=finding, details=details)
    return finding


def reconcile_target(target: Target) -> list[DriftFinding]:
    """Compare one target with the grants and remove what nothing explains; return the findings."""
    findings = []
    try:
        with get_connector(target) as connector:
            found = connector.list_managed()
            for ref in sorted(found):
                match = _GRANT_ID.search(ref)
                if not match:
                    continue
                finding = _judge(target, connector, ref, int(match.group(1)))
                if finding:
                    findings.append(finding)
            # The other direction: grants that say "active" but whose access is gone.
            active = Grant.objects.filter(
                profile__target=target, status=GS.ACTIVE, expires_at__gt=timezone.now()
            ).exclude(external_ref="")
            for grant in active:
                if (
                    grant.external_ref not in found
                    and not DriftFinding.objects.filter(grant=grant, kind=DriftFinding.Kind.MISSING).exists()
                ):
                    findings.append(
                        _finding(target, grant.external_ref, DriftFinding.Kind.MISSING, grant=grant, action="reported")
                    )
    except ConnectorError as exc:
        Target.objects.filter(pk=target.pk).update(
            reconciled_at=timezone.now(),
            reconcile_message=f"Could not reconcile: {exc.message}",
            health=Target.Health.UNREACHABLE,
            health_message=exc.message,
            checked_at=timezone.now(),
        )
        audit.record("reconcile.failed", obj=target, details={"target": target.name, "error": exc.message})
        return findings
    summary = f"{len(found)} on the target, {len(findings)} finding(s)"
    Target.objects.filter(pk=target.pk).update(reconciled_at=timezone.now(), reconcile_message=summary)
    if findings:
        events.announce("drift_found", finding_ids=[finding.pk for finding in findings])
    return findings


def _judge(target, connector, ref: str, grant_id: int) -> DriftFinding | None:
    with transaction.atomic():
        # skip_locked: a worker provisioning or revoking this grant holds its
        # row; its half-done work is not drift.
        grant = (
            Grant.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("profile")
            .filter(pk=grant_id)
            .first()
        )
        exists = Grant.objects.filter(pk=grant_id).exists()
        if grant is None and exists:
            return None  # locked right now: look again next run
        if grant is not None and grant.profile.target_id != target.pk:
            grant = None
        if grant is not None and grant.status in (GS.ACTIVE, GS.REVOKING):
            return None  # explained (or being ended by the revocation path)
        if grant is not None and grant.status == GS.SCHEDULED:
            kind = DriftFinding.Kind.ORPHAN  # a provisioning that crashed before it could commit
        elif grant is not None:
            kind = DriftFinding.Kind.NOT_REVOKED
        else:
            kind = DriftFinding.Kind.ORPHAN
        try:
            connector.revoke(grant if grant is not None and grant.status != GS.SCHEDULED else _stub(grant_id))
            action = "removed from the target"
        except ConnectorError as exc:
            action = f"removal failed: {exc.message}"
        objects = connector.take_inventory(grant_id)
        if objects and action.startswith("removed"):
            action += f", with {len(objects)} object(s) it had made or granted"
        return _finding(target, ref, kind, grant=grant, action=action[:200], objects=objects)


def reconcile_all() -> dict[str, int]:
    """Reconcile every target; one failing target does not stop the others."""
    counts = {}
    for target in Target.objects.all():
        try:
            counts[target.name] = len(reconcile_target(target))
        except Exception:
            log.exception("Reconciling %s failed", target.name)
            counts[target.name] = -1
    return counts
