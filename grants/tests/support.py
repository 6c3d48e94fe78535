"""Helpers the request-journey and access-review test files share (most fixtures are in conftest.py)."""

import datetime

from django.urls import reverse
from django.utils import timezone

from grants import lifecycle, reviews
from grants.models import AccessReviewItem

from .conftest import JUSTIFICATION

DAY = datetime.timedelta(days=1)


def form_data(chosen, **overrides):
    """Return the request form's fields for profile `chosen`, with `overrides`."""
    return {"profile": chosen.pk, "duration": "30m", "justification": JUSTIFICATION, "ticket": "INC-4711", **overrides}


def detail_url(req):
    return reverse("grants:request_detail", args=[req.pk])


def open_campaign(auditor, *profiles, undecided="keep", due=14 * DAY):
    return reviews.open_review(actor=auditor, profiles=profiles, due_at=timezone.now() + due, undecided=undecided)


def item(review, person, role=AccessReviewItem.Role.REQUESTER):
    return review.items.select_related("profile", "person").get(person=person, role=role)


def submit(user, profile, **kwargs):
    """`user` asks for `profile` for 30 minutes, with the suite's justification and ticket, through the lifecycle."""
    return lifecycle.submit_request(
        requester=user,
        profile=profile,
        duration=datetime.timedelta(minutes=30),
        justification=JUSTIFICATION,
        ticket="INC-4711",
        **kwargs,
    )
