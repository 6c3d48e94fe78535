"""The API tests' client: the test client speaking JSON with a user's token, and what it reads back.

Shared by api/tests and the API sections of the feature files (grants/tests/test_extensions.py, ...), through
the packages' conftests.
"""

import json

import pytest
from django.core.cache import cache

from accounts import tokens
from audit.models import AuditEvent


@pytest.fixture
def fresh_rate_limits():
    # The counters live in the (local-memory) cache, which outlives a test's transaction.
    cache.clear()
    yield
    cache.clear()


class Api:
    """The test client speaking JSON with one user's token."""

    def __init__(self, client, user=None, secret=None, **extra):
        self.client = client
        self.user = user
        if secret is None and user is not None:
            secret = tokens.create_token(actor=user, name="test", days=30)[1]
        self.headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        self.extra = extra

    def get(self, path):
        return self.client.get("/api/v1" + path, headers=self.headers, **self.extra)

    def post(self, path, body=None):
        data = "" if body is None else json.dumps(body)
        return self.client.post(
            "/api/v1" + path, data=data, content_type="application/json", headers=self.headers, **self.extra
        )


@pytest.fixture
def api(client, fresh_rate_limits):
    return lambda user=None, **kw: Api(client, user, **kw)


def refusals(action):
    return AuditEvent.objects.filter(action=action).count()
