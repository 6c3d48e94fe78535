"""Day tallies of decisions, per profile and per approver: what the Decisions report adds up.

A request is decided once (pending -> approved, denied, lapsed or
cancelled, never again), so the lifecycle adds each one to its day's rows
in the transaction that decides it (`add`), and a row only ever grows.
Days are UTC dates of `decided_at`, whatever the portal's time zone: a
report's period of local days reads the whole UTC days from here and the
rows of the partial days at its ends (`grants.selectors.decision_stats`).
`rebuild` recounts every row from the requests: the migration that made
the tallies runs it, and so can anyone who changed requests by hand.
"""

from __future__ import annotations

import datetime

from django.db import connection, transaction
from django.db.models import Count, DurationField, F, Max, Q, Sum
from django.db.models.functions import TruncDate

from . import policy
from .models import AccessRequest, ApproverDecisionDay, ProfileDecisionDay

RS = AccessRequest.Status
UTC = datetime.UTC
_DECIDED = [RS.APPROVED, RS.DENIED]
# Decided by a person (approved or denied by someone): the requests whose time to decision counts.
BY_PERSON = Q(decided_by__isnull=False, status__in=_DECIDED)
_ZERO = datetime.timedelta(0)
# A count per outcome of `policy.DECISION_OUTCOMES`: the tally rows' columns of the same names.
OUTCOME_SUMS = tuple(outcome.name for outcome in policy.DECISION_OUTCOMES)


def profile_sums() -> dict:
    """Return the aggregates over requests that a ProfileDecisionDay row keeps (the raw rows' side of `add`)."""
    waited = F("decided_at") - F("created_at")
    return {
        "requests": Count("pk"),
        "decided": Count("pk", filter=Q(status__in=_DECIDED)),
        **{name: Count("pk", filter=policy.decision_outcome_filter(name)) for name in OUTCOME_SUMS},
        "decided_by_person": Count("pk", filter=BY_PERSON),
        "person_time": Sum(waited, filter=BY_PERSON, output_field=DurationField()),
        "person_time_max": Max(waited, filter=BY_PERSON, output_field=DurationField()),
    }


APPROVER_SUMS = ("decided", "approved", "denied", "person_time", "person_time_max")


def approver_sums() -> dict:
    """Return the aggregates over requests decided by a person that an ApproverDecisionDay row keeps."""
    sums = profile_sums()
    return {name: sums[name] for name in APPROVER_SUMS}


def _parts(req: AccessRequest) -> tuple[dict, dict | None]:
    """Return what `req` adds to its profile's day and to its approver's (None: no person decided it)."""
    by_person = req.decided_by_id is not None and req.status in _DECIDED
    waited = req.decided_at - req.created_at
    outcome = policy.decision_outcome(req)
    profile = {
        "requests": 1,
        "decided": int(req.status in _DECIDED),
        **{name: int(outcome == name) for name in OUTCOME_SUMS},
        "decided_by_person": int(by_person),
        "person_time": waited if by_person else _ZERO,
        "person_time_max": waited if by_person else None,
    }
    if not by_person:
        return profile, None
    return profile, {name: profile[name] for name in APPROVER_SUMS}


def add(req: AccessRequest) -> None:
    """Count `req`, just decided (its status, `decided_at` and `decided_by` saved), in its day's tallies.

    Call it after the decision's audit event: the chain lock is then held,
    so the tally rows (locked until commit) are taken in one order by one
    transaction at a time and two decisions never wait for each other's.
    """
    if req.status == RS.PENDING or req.decided_at is None:
        raise ValueError(f"request #{req.pk} is not decided")
    day = req.decided_at.astimezone(UTC).date()
    profile, approver = _parts(req)
    _upsert(ProfileDecisionDay, {"day": day, "profile_id": req.profile_id}, profile)
    if approver is not None:
        _upsert(ApproverDecisionDay, {"day": day, "approver_id": req.decided_by_id}, approver)


def _upsert(model, key: dict, values: dict) -> None:
    # INSERT ... ON CONFLICT DO UPDATE (PostgreSQL and SQLite alike): adds
    # to the row, or makes it, in one statement, without a race between two
    # first decisions of a day.
    fields = {f.attname: f for f in model._meta.concrete_fields}
    q = connection.ops.quote_name
    table = q(model._meta.db_table)
    names = [*key, *values]
    params = [fields[name].get_db_prep_save(value, connection) for name, value in {**key, **values}.items()]
    updates = []
    for name in values:
        old, new = f"{table}.{q(name)}", f"excluded.{q(name)}"
        if name == "person_time_max":
            updates.append(f"{q(name)} = CASE WHEN {old} IS NULL OR {new} > {old} THEN {new} ELSE {old} END")
        else:
            updates.append(f"{q(name)} = {old} + {new}")
    sql = (
        f"INSERT INTO {table} ({', '.join(map(q, names))}) VALUES ({', '.join(['%s'] * len(names))}) "
        f"ON CONFLICT ({', '.join(map(q, key))}) DO UPDATE SET {', '.join(updates)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def rebuild(
    *, requests=AccessRequest, profile_days=ProfileDecisionDay, approver_days=ApproverDecisionDay
) -> tuple[int, int]:
    """Recount every tally from the requests; return the number of (profile, approver) rows.

    The models are arguments so that a migration can pass its historical ones.
    """
    with transaction.atomic():
        profile_days.objects.all().delete()
        approver_days.objects.all().delete()
        decided = (
            requests.objects.exclude(status=RS.PENDING)
            .filter(decided_at__isnull=False)
            .annotate(day=TruncDate("decided_at", tzinfo=UTC))
            .order_by()
        )
        per_profile = decided.values("day", "profile_id").annotate(**profile_sums())
        made = profile_days.objects.bulk_create(
            [profile_days(**{**row, "person_time": row["person_time"] or _ZERO}) for row in per_profile],
            batch_size=5000,
        )
        per_approver = decided.filter(BY_PERSON).values("day", "decided_by_id").annotate(**approver_sums())
        approvers = approver_days.objects.bulk_create(
            [
                approver_days(
                    approver_id=row.pop("decided_by_id"), **{**row, "person_time": row["person_time"] or _ZERO}
                )
                for row in per_approver
            ],
            batch_size=5000,
        )
    return len(made), len(approvers)
