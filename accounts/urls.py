from django.urls import path

from . import views

app_name = "accounts"

urlpatterns = [
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:pk>/revoke", views.token_revoke, name="token_revoke"),
    path("notifications/", views.notifications, name="notifications"),
    path("step-up/", views.step_up, name="step_up"),
    path("time-zone", views.time_zone, name="time_zone"),
]
