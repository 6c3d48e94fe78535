import django_tables2 as tables
from django.urls import reverse
from django.utils.html import format_html

from .durations import human_duration
from .models import AccessRequest, Grant


class RequestTable(tables.Table):
    id = tables.LinkColumn("grants:request_detail", args=[tables.A("pk")], verbose_name="#", text=lambda r: f"#{r.pk}")
    profile = tables.Column(verbose_name="Profile")
    created_at = tables.DateTimeColumn(verbose_name="Requested", format="Y-m-d H:i")
    status = tables.Column(verbose_name="Status")
    decided_by = tables.Column(verbose_name="Decided by", default="")
    again = tables.Column(verbose_name="", accessor="pk", orderable=False)

    def render_profile(self, value, record):
        if record.break_glass:
            return format_html('{} <span class="badge bad">Break-glass</span>', value)
        return value

    def render_duration(self, value, record):
        return f"+{human_duration(value)} (extension)" if record.extends_id else human_duration(value)

    def render_again(self, value):
        return format_html('<a href="{}?again={}">Request again</a>', reverse("grants:request_new"), value)

    class Meta:
        model = AccessRequest
        fields = ("id", "profile", "duration", "created_at", "status", "decided_by", "again")
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
