from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from grants.api import api

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="grants:my_access"), name="home"),
    path("admin/", admin.site.urls),
    path("accounts/tokens/", include("accounts.urls")),
    path("accounts/", include("allauth.urls")),
    path("access/", include("grants.urls")),
    path("api/v1/", api.urls),
]
