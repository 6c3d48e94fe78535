"""Prometheus metrics, computed from the database at each scrape.

Every web process answers from the same rows, so it does not matter which
one Prometheus reaches, and nothing is lost when a process restarts. A
scrape costs a fixed number of aggregate queries (about a dozen), whatever
the number of targets, requests or grants; the latency distributions look at
the last 24 hours only.

Counters (`*_total`) count rows that are never deleted (requests, audit
events, drift findings), so they only grow. The latency metrics are gauge
histograms: the distribution of the last 24 hours as seen now. Use
`histogram_quantile(0.99, jitportal_expiry_lag_seconds_bucket)` on them
directly, without `rate()`.
"""

import datetime

from django.conf import settings
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry

from audit.models import AuditEvent
from audit.sinks import sink_status
from grants import policy, selectors
from grants.models import AccessRequest, DriftFinding, Grant, Target

from .queues import broker, last_sweep

WINDOW = datetime.timedelta(hours=24)

# Seconds. Decisions are made by people (minutes to hours); provisioning and
# revocation by machines (milliseconds to seconds, minutes when retrying).
DECISION_BUCKETS = (10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 8 * 3600, 24 * 3600)
MACHINE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

# The outcomes `jitportal_decisions_total` counts, named as `grants.policy.decision_outcome` names them
# (a cancelled request was never decided).
DECISION_OUTCOMES = ("approved", "auto_approved", "break_glass", "denied", "lapsed")

PROVISION_FAILURE_EVENTS = {"grant.provision_retry": "retry", "grant.failed": "failed"}
REVOKE_FAILURE_EVENT = "grant.revoke_failed"


def _distribution(queryset, start, end, buckets):
    """Return (cumulative [(le, count)], sum of seconds) of `end - start` over `queryset`, in one query."""
    counts = {
        f"le_{i}": Count("pk", filter=Q(**{f"{end}__lte": start + datetime.timedelta(seconds=b)}))
        for i, b in enumerate(buckets)
    }
    row = queryset.aggregate(n=Count("pk"), total=Sum(F(end) - start), **counts)
    cumulative = [(str(float(b)), row[f"le_{i}"]) for i, b in enumerate(buckets)] + [("+Inf", row["n"])]
    total = row["total"]
    return cumulative, total.total_seconds() if total is not None else 0.0


def _gauge_histogram(name, documentation, distribution):
    buckets, total = distribution
    family = GaugeHistogramMetricFamily(name, documentation)
    family.add_metric([], buckets, total)
    return family


class DatabaseCollector:
    """Read the lifecycle's rows and turn them into metrics."""

    def collect(self):
        now = timezone.now()
        since = now - WINDOW
        RS, GS = AccessRequest.Status, Grant.Status

        # Requests by state, and decisions (one query).
        row = AccessRequest.objects.aggregate(
            **{s.value: Count("pk", filter=Q(status=s)) for s in RS},
            **{f"outcome_{o}": Count("pk", filter=policy.decision_outcome_filter(o)) for o in DECISION_OUTCOMES},
        )
        requests = GaugeMetricFamily("jitportal_requests", "Access requests by state.", labels=["state"])
        for s in RS:
            requests.add_metric([s.value], row[s.value])
        yield requests
        decisions = CounterMetricFamily(
            "jitportal_decisions",
            "Requests decided, by outcome (approved by people, approved by a policy rule, break-glass, denied, "
            "lapsed undecided).",
            labels=["outcome"],
        )
        for name in DECISION_OUTCOMES:
            decisions.add_metric([name], row[f"outcome_{name}"])
        yield decisions

        # Grants by state (a scan of the status index only), and the ones that
        # need someone's attention (among the few active or revoking ones).
        row = dict.fromkeys(GS.values, 0)
        row.update(Grant.objects.order_by().values("status").annotate(n=Count("*")).values_list("status", "n"))
        row.update(
            Grant.objects.filter(status__in=[GS.ACTIVE, GS.REVOKING]).aggregate(
                past_expiry=Count("pk", filter=Q(status=GS.ACTIVE, expires_at__lte=now)),
                failing=Count("pk", filter=Q(status=GS.REVOKING, attempts__gte=settings.JIT_REVOKE_FAILING_AFTER)),
            )
        )
        grants = GaugeMetricFamily("jitportal_grants", "Grants by state.", labels=["state"])
        for s in GS:
            grants.add_metric([s.value], row[s.value])
        yield grants
        yield GaugeMetricFamily(
            "jitportal_grants_past_expiry",
            "Grants still active on the target after their expiry (revocation not begun yet).",
            value=row["past_expiry"],
        )
        yield GaugeMetricFamily(
            "jitportal_revocations_failing",
            "Grants whose revocation failed JIT_REVOKE_FAILING_AFTER times or more (still retried).",
            value=row["failing"],
        )

        # Per target: live grants and reachability (one query).
        active = GaugeMetricFamily(
            "jitportal_active_grants",
            "Grants active now (provisioned, not expired), per target.",
            labels=["target", "kind"],
        )
        up = GaugeMetricFamily(
            "jitportal_target_up",
            "1 if the last check reached the target (warnings included), 0 if not or never checked.",
            labels=["target", "kind"],
        )
        for target in selectors.targets_overview():
            active.add_metric([target.name, target.kind], target.live)
            up.add_metric(
                [target.name, target.kind], 1 if target.health in (Target.Health.OK, Target.Health.WARNING) else 0
            )
        yield active
        yield up

        # Latencies of the last 24 hours (one query each).
        yield _gauge_histogram(
            "jitportal_time_to_decision_seconds",
            "From request to a person's approval or denial, for requests decided in the last 24 h.",
            _distribution(
                AccessRequest.objects.filter(
                    decided_at__gte=since, decided_by__isnull=False, status__in=[RS.APPROVED, RS.DENIED]
                ),
                F("created_at"),
                "decided_at",
                DECISION_BUCKETS,
            ),
        )
        yield _gauge_histogram(
            "jitportal_provisioning_latency_seconds",
            "From approval (or the start of a scheduled window) to access on the target, for grants "
            "provisioned in the last 24 h.",
            _distribution(
                Grant.objects.filter(starts_at__gte=since),
                Greatest(F("created_at"), Coalesce(F("not_before"), F("created_at"))),
                "starts_at",
                MACHINE_BUCKETS,
            ),
        )
        yield _gauge_histogram(
            "jitportal_revocation_latency_seconds",
            "From the start of a revocation to the target confirmed clean, for grants revoked in the last 24 h.",
            _distribution(
                Grant.objects.filter(verified_at__gte=since), F("revoke_requested_at"), "verified_at", MACHINE_BUCKETS
            ),
        )
        yield _gauge_histogram(
            "jitportal_expiry_lag_seconds",
            "From expires_at to the target confirmed clean, for grants that expired and were revoked in the last 24 h.",
            _distribution(
                Grant.objects.filter(verified_at__gte=since, end_reason=Grant.EndReason.EXPIRED),
                F("expires_at"),
                "verified_at",
                MACHINE_BUCKETS,
            ),
        )

        # Failures, from the trail (one query; failures are rare and `action` is indexed).
        counts = dict(
            AuditEvent.objects.filter(action__in=[*PROVISION_FAILURE_EVENTS, REVOKE_FAILURE_EVENT])
            .order_by()
            .values("action")
            .annotate(n=Count("pk"))
            .values_list("action", "n")
        )
        provision = CounterMetricFamily(
            "jitportal_provisioning_failures",
            "Failed provisioning attempts: retried, or final (the grant failed).",
            labels=["outcome"],
        )
        for action, outcome in PROVISION_FAILURE_EVENTS.items():
            provision.add_metric([outcome], counts.get(action, 0))
        yield provision
        yield CounterMetricFamily(
            "jitportal_revocation_failures",
            "Failed revocation attempts (each is retried with backoff).",
            value=counts.get(REVOKE_FAILURE_EVENT, 0),
        )

        # Drift found by the reconciler (one query).
        total = CounterMetricFamily(
            "jitportal_drift_findings", "Drift findings recorded by the reconciler, by kind.", labels=["kind"]
        )
        unresolved = GaugeMetricFamily(
            "jitportal_drift_findings_open",
            "Drift findings not resolved yet, per target and kind.",
            labels=["target", "kind"],
        )
        by_kind = dict.fromkeys(DriftFinding.Kind.values, 0)
        for target, kind, n, n_open in (
            DriftFinding.objects.order_by()
            .values("target__name", "kind")
            .annotate(n=Count("pk"), n_open=Count("pk", filter=Q(resolved_at__isnull=True)))
            .values_list("target__name", "kind", "n", "n_open")
        ):
            by_kind[kind] = by_kind.get(kind, 0) + n
            unresolved.add_metric([target, kind], n_open)
        for kind, n in by_kind.items():
            total.add_metric([kind], n)
        yield total
        yield unresolved

        # The background machinery (one query each).
        yield GaugeMetricFamily(
            "jitportal_queued_tasks", "Tasks waiting in the django-q2 broker.", value=broker().queue_size() or 0
        )
        last = last_sweep()
        if last is not None:
            yield GaugeMetricFamily(
                "jitportal_sweep_last_finished_timestamp_seconds",
                "When a worker last finished the minute sweep (Unix time).",
                value=last.timestamp(),
            )

        # Audit streaming (audit/sinks/): how far behind each sink is, and why (one query for all sinks).
        labels = ["sink", "kind"]
        lag = GaugeMetricFamily(
            "jitportal_audit_sink_lag_events", "Audit events a sink has not received yet.", labels=labels
        )
        failures = GaugeMetricFamily(
            "jitportal_audit_sink_failures",
            "Consecutive failed deliveries to a sink (0: the last one worked).",
            labels=labels,
        )
        delivered = GaugeMetricFamily(
            "jitportal_audit_sink_last_delivered_timestamp_seconds",
            "When a sink last took a batch (Unix time).",
            labels=labels,
        )
        errors = GaugeMetricFamily(
            "jitportal_audit_sink_last_error_info",
            "1 with the last error of a sink that is failing.",
            labels=[*labels, "error"],
        )
        for s in sink_status():
            cursor = s["cursor"]
            lag.add_metric([s["name"], s["kind"]], s["lag"])
            failures.add_metric([s["name"], s["kind"]], cursor.failures if cursor else 0)
            if cursor is not None and cursor.delivered_at is not None:
                delivered.add_metric([s["name"], s["kind"]], cursor.delivered_at.timestamp())
            if cursor is not None and cursor.last_error:
                errors.add_metric([s["name"], s["kind"], cursor.last_error[:200]], 1)
        yield lag
        yield failures
        yield delivered
        yield errors


# Our own registry, not prometheus_client's default one: its process and
# platform metrics describe one web process, ours describe the portal.
registry = CollectorRegistry(auto_describe=False)
registry.register(DatabaseCollector())
