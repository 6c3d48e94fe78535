from django.urls import path

from . import views

# Joins the grants pages' URLs (grants:ssh_krl, under /access/) through `grants.connectors.URLS`.
urlpatterns = [
    path("ssh/<slug:target>/krl", views.ssh_krl, name="ssh_krl"),
    path("ssh/<slug:target>/sessions", views.ssh_session_report, name="ssh_session_report"),
]
