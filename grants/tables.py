import django_tables2 as tables

from .durations import human_duration
from .models import AccessRequest, Grant


class RequestTable(tables.Table):
    id = tables.LinkColumn("grants:request_detail", args=[tables.A("pk")], verbose_name="#", text=lambda r: f"#{r.pk}")
    profile = tables.Column(verbose_name="Profile")
    created_at = tables.DateTimeColumn(verbose_name="Requested", format="Y-m-d H:i")
    status = tables.Column(verbose_name="Status")
    decided_by = tables.Column(verbose_name="Decided by", default="")

    def render_duration(self, value):
        return human_duration(value)

    class Meta:
        model = AccessRequest
        fields = ("id", "profile", "duration", "created_at", "status", "decided_by")
        empty_text = "You have not asked for access yet."


class PastGrantTable(tables.Table):
    id = tables.LinkColumn("grants:grant_detail", args=[tables.A("pk")], verbose_name="#", text=lambda r: f"#{r.pk}")
    profile = tables.Column(verbose_name="Profile")
    starts_at = tables.DateTimeColumn(verbose_name="Started", format="Y-m-d H:i")
    verified_at = tables.DateTimeColumn(verbose_name="Ended (verified)", format="Y-m-d H:i:s")
    end_reason = tables.Column(verbose_name="How it ended", default="")
    status = tables.Column(verbose_name="Status")

    class Meta:
        model = Grant
        fields = ("id", "profile", "starts_at", "verified_at", "end_reason", "status")
        empty_text = "No past grants."
