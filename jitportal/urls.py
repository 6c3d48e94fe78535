from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from api.views import api
from notifications import views as notifications

from . import ops

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="grants:my_access"), name="home"),
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("accounts/", include("allauth.urls")),
    path("access/", include("grants.urls")),
    path("audit/", include("reports.urls")),  # the reports kept their /audit/ paths and audit: URL names
    path("api/v1/", api.urls),
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics, name="metrics"),
    path("slack/interactions", notifications.interactions, name="slack_interactions"),
]
