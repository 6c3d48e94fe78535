"""Reads of targets: live grants per target, drift findings."""

from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from grants.models import DriftFinding, Grant, Target


def targets_overview():
    """Return every target with its count of live grants (one query).

    Counted in a subquery from the active grants (the status index), not by
    joining every grant there ever was to its target.
    """
    live = (
        Grant.objects.filter(profile__target=OuterRef("pk"), status=Grant.Status.ACTIVE, expires_at__gt=timezone.now())
        .order_by()
        .values("profile__target")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Target.objects.annotate(live=Coalesce(Subquery(live, output_field=IntegerField()), 0)).order_by("name")


def drift_findings(*, limit=200):
    return DriftFinding.objects.select_related("target", "grant__user").order_by("-found_at")[:limit]
