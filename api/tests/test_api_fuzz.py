"""A property-based run of the JSON API from its own OpenAPI
document (schemathesis): no server errors, answers as documented."""

import pytest
import schemathesis
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts import tokens
from api.views import api


@pytest.fixture
def wsgi_app():
    # As Django's test client does: keep the test's transaction (and so its
    # rows) open across requests instead of closing the connection after each.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


# Loaded from the API object (no request needed at collection time); the
# calls go through Django's WSGI handler like real ones.
schema = schemathesis.openapi.from_dict(api.get_openapi_schema(path_prefix="/api/v1"))


@pytest.fixture
def bearer(ana, otto, pending_request, settings):
    """Ana's token, with a request of hers pending so that ids near 1 exist."""
    settings.JIT_API_REQUESTS_PER_HOUR = 10**6  # reach the lifecycle, not the rate limit
    cache.clear()
    yield {"Authorization": f"Bearer {tokens.create_token(actor=ana, name='fuzz', days=1)[1]}"}
    cache.clear()


@schema.parametrize()
@settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_the_api_answers_every_generated_call_as_documented(case, bearer, wsgi_app):
    case.call_and_validate(
        app=wsgi_app,
        headers=bearer,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
    )
