"""The notification tests use the grants suite's catalog on the real target cluster, its personas, and the mail and
Slack servers of support.py."""

from grants.tests.conftest import (  # noqa: F401 (fixtures)
    JUSTIFICATION,
    active_grant,
    admin_user,
    ana,
    approved_request,
    audra,
    bob,
    eve,
    groups,
    marc,
    otto,
    pending_request,
    profile,
    rw_profile,
    target,
)

from .support import fake_slack, portal, run, slack, smtp  # noqa: F401 (fixtures)
