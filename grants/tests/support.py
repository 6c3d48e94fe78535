"""Helpers the request-journey test files share (fixtures are in conftest.py)."""

from django.urls import reverse

from .conftest import JUSTIFICATION


def form_data(chosen, **overrides):
    """Return the request form's fields for profile `chosen`, with `overrides`."""
    return {"profile": chosen.pk, "duration": "30m", "justification": JUSTIFICATION, "ticket": "INC-4711", **overrides}


def detail_url(req):
    return reverse("grants:request_detail", args=[req.pk])
