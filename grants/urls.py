from django.urls import path

from . import connectors, views

app_name = "grants"

urlpatterns = [
    path("", views.my_access, name="my_access"),
    path("request/", views.request_new, name="request_new"),
    path("inbox/", views.inbox, name="inbox"),
    path("targets/", views.targets, name="targets"),
    path("requests/<int:pk>/", views.request_detail, name="request_detail"),
    path("requests/<int:pk>/status", views.request_status, name="request_status"),
    path("requests/<int:pk>/decide", views.request_decide, name="request_decide"),
    path("requests/<int:pk>/cancel", views.request_cancel, name="request_cancel"),
    path("grants/<int:pk>/", views.grant_detail, name="grant_detail"),
    path("grants/<int:pk>/credentials", views.grant_credentials, name="grant_credentials"),
    path("grants/<int:pk>/release", views.grant_release, name="grant_release"),
    path("grants/<int:pk>/extend", views.grant_extend, name="grant_extend"),
    path("step-up/<str:key>/", views.step_up_resume, name="step_up_resume"),
    path("reviews/", views.reviews, name="reviews"),
    path("delegations/", views.delegations, name="delegations"),
    path("delegations/<int:pk>/end", views.delegation_end, name="delegation_end"),
    path("reviews/<int:pk>/close", views.review_close, name="review_close"),
    *connectors.urlpatterns(),
]
