"""The API tests use the request journey's catalog (grants/tests/conftest.py), the personas (tests/personas.py)
and the JSON client (support.py)."""

from grants.tests.conftest import (  # noqa: F401 (fixtures)
    JUSTIFICATION,
    active_grant,
    approved_request,
    pending_request,
    profile,
    rw_profile,
    target,
)
from tests.personas import admin_user, ana, audra, bob, eve, groups, marc, otto  # noqa: F401 (fixtures)

from .support import api, fresh_rate_limits  # noqa: F401 (fixtures)
