from django.urls import path

from . import reviews, views

# The namespace the pages had under audit/: templates, tests and bookmarks use `audit:<name>`.
app_name = "audit"

urlpatterns = [
    path("", views.index, name="index"),
    path("overview/", views.overview_page, name="overview"),
    path("access/", views.access_history, name="access"),
    path("current/", views.current_access, name="current"),
    path("decisions/", views.decisions, name="decisions"),
    path("break-glass/", views.break_glass, name="break_glass"),
    path("users/", views.timeline_lookup, name="timeline_lookup"),
    path("users/<str:username>/", views.timeline, name="timeline"),
    path("reviews/", reviews.review_list, name="reviews"),
    path("reviews/<int:pk>/", reviews.review_detail, name="review"),
    path("reviews/<int:pk>/items/", reviews.review_items, name="review_items"),
    path("reviews/<int:pk>/evidence.csv", reviews.review_evidence, name="review_evidence"),
    path("reviews/<int:pk>/close/", reviews.review_close, name="review_close"),
    path("reviews/removals/<int:pk>/reinstate/", reviews.removal_reinstate, name="removal_reinstate"),
    path("grants/<int:pk>/activity.csv", views.grant_activity, name="grant_activity"),
]
